package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// The operator's view of frameworks (the scheduler API): gearbox
// frameworks, framework teardown, roles, weights, offers.

func newFrameworksCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "frameworks", Short: "List the frameworks registered with the master", Args: cobra.NoArgs}
	return listCmd(cmd, dialMaster, masterv1.OperatorClient.GetFrameworks, &masterv1.GetFrameworksRequest{},
		(*masterv1.GetFrameworksResponse).GetFrameworks, printFrameworks)
}

func printFrameworks(w io.Writer, r *masterv1.GetFrameworksResponse) error {
	return table(w, "ID\tNAME\tROLES\tPRINCIPAL\tCONNECTED\tTASKS\tCPUS/MEM USED\tOFFERED\tPENDING UPDATES", func(tw io.Writer) {
		for _, f := range r.Frameworks {
			conn := fmt.Sprint(f.Connected)
			if !f.Connected && f.FailoverDeadline != nil {
				conn = "no, removed in " + strings.TrimPrefix(age(f.FailoverDeadline), "-")
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", f.Id, f.Name, strings.Join(f.Roles, ","), orDash(f.Principal), conn,
				f.ActiveTasks, fmtResources(f.Used), fmtResources(f.Offered), f.PendingUpdates)
		}
	})
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newFrameworkCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "framework", Short: "Act on a framework"}
	cmd.AddCommand(masterActCmd("teardown ID", "Remove a framework at once: its offers are rescinded and its tasks killed",
		func(ctx context.Context, c masterv1.OperatorClient, id string) error {
			_, err := c.TeardownFramework(ctx, &masterv1.TeardownFrameworkRequest{FrameworkId: id})
			return err
		}))
	return cmd
}

func newRolesCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "roles", Short: "List roles: weight, frameworks, allocated and offered resources", Args: cobra.NoArgs}
	return listCmd(cmd, dialMaster, masterv1.OperatorClient.GetRoles, &masterv1.GetRolesRequest{},
		(*masterv1.GetRolesResponse).GetRoles, func(w io.Writer, r *masterv1.GetRolesResponse) error {
			return table(w, "ROLE\tWEIGHT\tFRAMEWORKS\tCPUS/MEM ALLOCATED\tOFFERED", func(tw io.Writer) {
				for _, x := range r.Roles {
					fmt.Fprintf(tw, "%s\t%g\t%s\t%s\t%s\n", x.Name, x.Weight, orDash(strings.Join(x.Frameworks, ",")), fmtResources(x.Allocated), fmtResources(x.Offered))
				}
			})
		})
}

func newOffersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "offers", Short: "List the outstanding offers", Args: cobra.NoArgs}
	return listCmd(cmd, dialMaster, masterv1.OperatorClient.GetOffers, &masterv1.GetOffersRequest{},
		(*masterv1.GetOffersResponse).GetOffers, func(w io.Writer, r *masterv1.GetOffersResponse) error {
			return table(w, "ID\tFRAMEWORK\tAGENT\tHOSTNAME\tROLE\tCPUS/MEM\tAGE", func(tw io.Writer) {
				for _, o := range r.Offers {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Id, o.FrameworkId, o.AgentId, o.Hostname, o.Role, fmtResources(o.Resources), age(o.OfferedAt))
				}
			})
		})
}

func newWeightsCmd() *cobra.Command {
	cmd := listCmd(&cobra.Command{Use: "weights", Short: "List roles' weights (a role not listed weighs 1)", Args: cobra.NoArgs}, dialMaster, masterv1.OperatorClient.GetWeights, &masterv1.GetWeightsRequest{},
		(*masterv1.GetWeightsResponse).GetWeights, func(w io.Writer, r *masterv1.GetWeightsResponse) error {
			return table(w, "ROLE\tWEIGHT", func(tw io.Writer) {
				for _, x := range r.Weights {
					fmt.Fprintf(tw, "%s\t%g\n", x.Role, x.Weight)
				}
			})
		})
	cmd.AddCommand(&cobra.Command{
		Use:   "set ROLE=WEIGHT...",
		Short: "Set roles' weights: a role's fair share of offers is in proportion to its weight",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := &masterv1.UpdateWeightsRequest{}
			for _, a := range args {
				role, ws, ok := strings.Cut(a, "=")
				w, err := strconv.ParseFloat(ws, 64)
				if !ok || role == "" || err != nil {
					return &exitError{code: 125, err: fmt.Errorf("%q: write ROLE=WEIGHT, e.g. web=2", a)}
				}
				req.Weights = append(req.Weights, &masterv1.WeightInfo{Role: role, Weight: w})
			}
			c, closeConn, err := dialMaster(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			_, err = c.UpdateWeights(ctxOf(cmd), req)
			return err
		},
	})
	return cmd
}

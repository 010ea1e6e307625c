package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// The operator's view of frameworks (the scheduler API): gearbox
// frameworks, framework teardown, roles, weights, offers.

// listCmd is a master listing: fetch, then JSON or a table.
func listCmd(use, short string, fetch func(*cobra.Command, masterv1.OperatorClient) ([]proto.Message, func(*tabwriter.Writer), error)) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, closeConn, err := dialMaster(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			items, table, err := fetch(cmd, c)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), items...)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			table(tw)
			return tw.Flush()
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func newFrameworksCmd() *cobra.Command {
	return listCmd("frameworks", "List the frameworks registered with the master", func(cmd *cobra.Command, c masterv1.OperatorClient) ([]proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.GetFrameworks(ctxOf(cmd), &masterv1.GetFrameworksRequest{})
		if err != nil {
			return nil, nil, err
		}
		return protoList(r.Frameworks), func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tNAME\tROLES\tPRINCIPAL\tCONNECTED\tTASKS\tCPUS/MEM USED\tOFFERED\tPENDING UPDATES")
			for _, f := range r.Frameworks {
				conn := fmt.Sprint(f.Connected)
				if !f.Connected && f.FailoverDeadline != nil {
					conn = "no, removed in " + strings.TrimPrefix(age(f.FailoverDeadline), "-")
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%d\n", f.Id, f.Name, strings.Join(f.Roles, ","), orDash(f.Principal), conn,
					f.ActiveTasks, fmtResources(f.Used), fmtResources(f.Offered), f.PendingUpdates)
			}
		}, nil
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
	cmd.AddCommand(&cobra.Command{
		Use:   "teardown ID",
		Short: "Remove a framework at once: its offers are rescinded and its tasks killed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := dialMaster(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			if _, err := c.TeardownFramework(ctxOf(cmd), &masterv1.TeardownFrameworkRequest{FrameworkId: args[0]}); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	})
	return cmd
}

func newRolesCmd() *cobra.Command {
	return listCmd("roles", "List roles: weight, frameworks, allocated and offered resources", func(cmd *cobra.Command, c masterv1.OperatorClient) ([]proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.GetRoles(ctxOf(cmd), &masterv1.GetRolesRequest{})
		if err != nil {
			return nil, nil, err
		}
		return protoList(r.Roles), func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ROLE\tWEIGHT\tFRAMEWORKS\tCPUS/MEM ALLOCATED\tOFFERED")
			for _, x := range r.Roles {
				fmt.Fprintf(tw, "%s\t%g\t%s\t%s\t%s\n", x.Name, x.Weight, orDash(strings.Join(x.Frameworks, ",")), fmtResources(x.Allocated), fmtResources(x.Offered))
			}
		}, nil
	})
}

func newOffersCmd() *cobra.Command {
	return listCmd("offers", "List the outstanding offers", func(cmd *cobra.Command, c masterv1.OperatorClient) ([]proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.GetOffers(ctxOf(cmd), &masterv1.GetOffersRequest{})
		if err != nil {
			return nil, nil, err
		}
		return protoList(r.Offers), func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ID\tFRAMEWORK\tAGENT\tHOSTNAME\tROLE\tCPUS/MEM\tAGE")
			for _, o := range r.Offers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", o.Id, o.FrameworkId, o.AgentId, o.Hostname, o.Role, fmtResources(o.Resources), age(o.OfferedAt))
			}
		}, nil
	})
}

func newWeightsCmd() *cobra.Command {
	cmd := listCmd("weights", "List roles' weights (a role not listed weighs 1)", func(cmd *cobra.Command, c masterv1.OperatorClient) ([]proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.GetWeights(ctxOf(cmd), &masterv1.GetWeightsRequest{})
		if err != nil {
			return nil, nil, err
		}
		return protoList(r.Weights), func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ROLE\tWEIGHT")
			for _, w := range r.Weights {
				fmt.Fprintf(tw, "%s\t%g\n", w.Role, w.Weight)
			}
		}, nil
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

package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// newMastersCmd is gearbox masters: a replicated master's members (HA on
// etcd), which leads and since when. Any master answers, standbys too.
func newMastersCmd() *cobra.Command {
	return listCmd("masters", "List the masters (of a replicated master: which one leads)", func(cmd *cobra.Command, c masterv1.OperatorClient) ([]proto.Message, func(*tabwriter.Writer), error) {
		r, err := c.GetMasters(ctxOf(cmd), &masterv1.GetMastersRequest{})
		if err != nil {
			return nil, nil, err
		}
		return protoList(r.Masters), func(tw *tabwriter.Writer) {
			fmt.Fprintln(tw, "ADDRESS\tVERSION\tLEADER\tELECTED")
			for _, m := range r.Masters {
				elected := "-"
				if m.ElectedAt != nil {
					elected = age(m.ElectedAt) + " ago"
				}
				fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", m.Address, orDash(m.Version), m.Leader, elected)
			}
		}, nil
	})
}

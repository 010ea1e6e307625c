package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// newMastersCmd is gearbox masters: a replicated master's members (HA on
// etcd), which leads and since when. Any master answers, standbys too.
func newMastersCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "masters", Short: "List the masters (of a replicated master: which one leads)", Args: cobra.NoArgs}
	return listCmd(cmd, dialMaster, masterv1.OperatorClient.GetMasters, &masterv1.GetMastersRequest{},
		(*masterv1.GetMastersResponse).GetMasters, printMasters)
}

func printMasters(w io.Writer, r *masterv1.GetMastersResponse) error {
	return table(w, "ADDRESS\tVERSION\tLEADER\tELECTED", func(tw io.Writer) {
		for _, m := range r.Masters {
			elected := "-"
			if m.ElectedAt != nil {
				elected = age(m.ElectedAt) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", m.Address, orDash(m.Version), m.Leader, elected)
		}
	})
}

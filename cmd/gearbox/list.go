package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// listCmd makes cmd a listing: one dial, one call with req, then the
// response as JSON (-o json: the messages items picks) or as show prints
// it. C is the client dial returns (the agent's or the master's); call is
// the client's method (agentv1.AgentClient.ListImages); flags that shape
// the call write into req.
func listCmd[C, Q, R any, T proto.Message](cmd *cobra.Command, dial func(*cobra.Command) (C, func(), error),
	call func(C, context.Context, Q, ...grpc.CallOption) (R, error), req Q, items func(R) []T, show func(io.Writer, R) error) *cobra.Command {
	var output string
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, closeConn, err := dialFor(cmd, output, dial)
		if err != nil {
			return err
		}
		defer closeConn()
		resp, err := call(c, ctxOf(cmd), req)
		if err != nil {
			return err
		}
		if output == "json" {
			return printJSON(cmd.OutOrStdout(), protoList(items(resp))...)
		}
		return show(cmd.OutOrStdout(), resp)
	}
	addOutputFlag(cmd, &output)
	return cmd
}

// dialFor checks the -o value, then dials: how every command that prints
// starts.
func dialFor[C any](cmd *cobra.Command, output string, dial func(*cobra.Command) (C, func(), error)) (C, func(), error) {
	if err := checkOutput(output); err != nil {
		var none C
		return none, nil, err
	}
	return dial(cmd)
}

// table prints header and the lines rows writes (tab-separated) as aligned
// columns, as every listing does.
func table(w io.Writer, header string, rows func(tw io.Writer)) error {
	tw := tabwriter.NewWriter(w, 0, 4, 3, ' ', 0)
	fmt.Fprintln(tw, header)
	rows(tw)
	return tw.Flush()
}

// one is items for a response that is itself the one item.
func one[R any](r R) []R { return []R{r} }

package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/gearboxd/gearbox/internal/units"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func newImageTagCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "tag SOURCE TARGET",
		Short:   "Give an image of the agent a further name",
		Example: "  gearbox image tag bars/tool:oci registry:5000/bars/tool:1.0",
		Args:    exactArgs(2, "SOURCE and TARGET"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := c.TagImage(ctxOf(cmd), &agentv1.TagImageRequest{Source: args[0], Target: args[1]})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: tagged %s\n", resp.GetImage().GetName(), shortDigest(resp.GetImage().GetDigest()))
			return nil
		},
	}
}

func newImagePruneCmd() *cobra.Command {
	var all bool
	var keep []string
	cmd := &cobra.Command{
		Use:   "prune [--all] [--keep IMAGE…]",
		Short: "Remove images no container uses",
		Long: "Remove images no container uses (in any state), least recently used first.\n" +
			"Without --all, images used within the agent's image_gc.min_age are kept too\n" +
			"(docker image prune -a with an age filter); with --all every image no container\n" +
			"uses goes. --keep names images never removed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := c.PruneImages(ctxOf(cmd), &agentv1.PruneImagesRequest{All: all, ExcludedImages: keep})
			if err != nil {
				return err
			}
			for _, im := range resp.GetRemoved() {
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", im.GetName())
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d image(s) removed, %s reclaimed\n", len(resp.GetRemoved()), units.Human(resp.GetReclaimedBytes()))
			return nil
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "remove every image no container uses, however recently used")
	cmd.Flags().StringSliceVar(&keep, "keep", nil, "an image never to remove (repeat or comma-separate)")
	return cmd
}

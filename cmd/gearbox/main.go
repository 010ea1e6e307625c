// gearbox is the node agent, the dev environment and the client, in one
// binary. Exit status: 125 for an error of gearbox itself, 126/127 when a
// container's command cannot run, otherwise the container's.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/gearboxd/gearbox/internal/version"
)

// exitError carries an exit status out of a command.
type exitError struct {
	code int
	err  error // printed when not nil
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

func main() {
	root := newRoot()
	cmd, err := root.ExecuteC()
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "gearbox:", explain(cmd, ee.err))
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "gearbox:", explain(cmd, err))
	os.Exit(125)
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "gearbox",
		Short: "A node agent for containers on containerd, and its client",
		Long: `gearbox runs Docker and OCI images through containerd.

  gearbox agent            run the node agent
  gearbox master           run the master; agents register with it (gearbox agent --master)
  gearbox dev              a private containerd, an agent and a demo image, for trying gearbox
  gearbox run IMAGE CMD…   run a container (Docker-shaped client commands follow)

The client talks to the agent named by --agent or GEARBOX_AGENT
(default ` + defaultAgent + `); agents, tasks, task and events talk to the
master named by --master or GEARBOX_MASTER (default ` + defaultMaster + `;
a replicated master's addresses separated by commas: the leader answers).`,
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("agent", "", "agent address: unix:///path or tcp://host:port (env GEARBOX_AGENT, default "+defaultAgent+")")
	root.PersistentFlags().String("tls-ca", "", "CA that signed the agent's certificate, for tcp:// (env GEARBOX_TLS_CA)")
	root.PersistentFlags().String("tls-cert", "", "client certificate, for tcp:// (env GEARBOX_TLS_CERT)")
	root.PersistentFlags().String("tls-key", "", "client key, for tcp:// (env GEARBOX_TLS_KEY)")
	root.PersistentFlags().String("master", "", "master address for agents, tasks, task, events, masters: HOST:PORT or unix:///PATH; a replicated master's comma-separated, the leader is found (env GEARBOX_MASTER, default "+defaultMaster+")")
	ac := newAgentCmd()
	ac.AddCommand(newMarkGoneCmd())
	mc := newMasterCmd()
	mc.AddCommand(newMigrateStoreCmd())
	root.AddCommand(ac, newDevCmd(), mc, newAgentsCmd(), newTasksCmd(), newTaskCmd(), newEventsCmd(), newMastersCmd())
	root.AddCommand(newFrameworksCmd(), newFrameworkCmd(), newRolesCmd(), newOffersCmd(), newWeightsCmd())
	addContainerCmds(root)
	root.AddCommand(newImageCmd(), newFsCmd(), newVersionCmd())
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &exitError{code: 125, err: fmt.Errorf("%v (see gearbox %s --help)", err, c.Name())}
	})
	return root
}

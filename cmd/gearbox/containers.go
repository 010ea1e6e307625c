package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/internal/ids"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func addContainerCmds(root *cobra.Command) {
	root.AddCommand(newRunCmd(), newPsCmd(), newInspectCmd(), newWaitCmd(), newKillCmd(), newRmCmd(), newLogsCmd())
}

type runOpts struct {
	detach     bool
	rm         bool
	name       string
	runtime    string
	env        []string
	workdir    string
	user       string
	entrypoint string
	labels     []string
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [CMD…]",
		Short: "Run a container",
		Long: `Run a container from an image present on the agent (gearbox image pull / import).

In the foreground, run streams the container's output and exits with its exit
status; SIGINT and SIGTERM are passed on to the container. With -d it prints
the container's ID and returns.`,
		Example: `  gearbox run localhost/demo echo hello
  gearbox run -d --name web -e PORT=8080 registry:5000/web:1.2
  gearbox run --rm -w /tmp -u nobody busybox sh -c 'id; pwd'`,
		Args: needArgs(1, "an IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error { return runContainer(cmd, o, args) },
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after IMAGE belong to the command
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container ID")
	f.BoolVar(&o.rm, "rm", false, "remove the container when it exits")
	f.StringVar(&o.name, "name", "", "container ID (default: random)")
	f.StringVar(&o.runtime, "runtime", "", "runtime profile (default: the agent's default)")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable (KEY=VALUE, or KEY to pass this shell's)")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&o.user, "user", "u", "", "user (name|uid[:group|gid])")
	f.StringVar(&o.entrypoint, "entrypoint", "", "override the image's entrypoint")
	f.StringArrayVarP(&o.labels, "label", "l", nil, "set a label (KEY=VALUE)")
	return cmd
}

func runContainer(cmd *cobra.Command, o runOpts, args []string) error {
	if o.name == "" {
		// Named here rather than by the agent so that a failed launch can
		// still be removed (--rm).
		o.name = ids.New()
	}
	req := &agentv1.LaunchContainerRequest{
		ContainerId: o.name,
		Image:       args[0],
		Runtime:     o.runtime,
		AutoRemove:  o.rm && o.detach, // in the foreground the client removes it after reading all output
	}
	if len(args) > 1 {
		req.Cmd = &agentv1.StringList{Values: args[1:]}
	}
	if cmd.Flags().Changed("entrypoint") {
		req.Entrypoint = &agentv1.StringList{}
		if o.entrypoint != "" {
			req.Entrypoint.Values = []string{o.entrypoint}
		}
	}
	for _, e := range o.env {
		if !strings.Contains(e, "=") {
			if v, ok := os.LookupEnv(e); ok {
				e = e + "=" + v
			} else {
				continue // Docker's rule: an unset KEY is left out
			}
		}
		req.Env = append(req.Env, e)
	}
	if cmd.Flags().Changed("workdir") {
		req.WorkingDir = &o.workdir
	}
	if cmd.Flags().Changed("user") {
		req.User = &o.user
	}
	for _, l := range o.labels {
		k, v, _ := strings.Cut(l, "=")
		if req.Labels == nil {
			req.Labels = map[string]string{}
		}
		req.Labels[k] = v
	}

	c, closeConn, err := dial(cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx := ctxOf(cmd)
	resp, err := c.LaunchContainer(ctx, req)
	if err != nil {
		code := 125
		switch launchFailure(err) {
		case "COMMAND_NOT_FOUND":
			code = 127
		case "COMMAND_NOT_EXECUTABLE":
			code = 126
		}
		if o.rm && !o.detach {
			// A launch that failed after creating the container leaves it.
			c.RemoveContainer(context.WithoutCancel(ctx), &agentv1.RemoveContainerRequest{ContainerId: req.ContainerId, Force: true})
		}
		return &exitError{code: code, err: err}
	}
	id := resp.Container.Id
	if o.detach {
		fmt.Fprintln(cmd.OutOrStdout(), id)
		return nil
	}

	// Pass SIGINT and SIGTERM on to the container, as docker run does.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	fwdCtx, stopFwd := context.WithCancel(context.WithoutCancel(ctx))
	defer stopFwd()
	go func() {
		for {
			select {
			case <-fwdCtx.Done():
				return
			case s := <-sigs:
				sig := s.(syscall.Signal)
				c.KillContainer(fwdCtx, &agentv1.KillContainerRequest{ContainerId: id, Signal: unix.SignalName(sig)})
			}
		}
	}()

	streamErr := streamLogs(ctx, c, id, true, cmd.OutOrStdout(), cmd.ErrOrStderr())
	w, err := c.WaitContainer(ctx, &agentv1.WaitContainerRequest{ContainerId: id})
	if err != nil {
		return err
	}
	if streamErr != nil {
		fmt.Fprintln(cmd.ErrOrStderr(), "gearbox: reading the container's output:", describe(streamErr))
	}
	if o.rm {
		if _, err := c.RemoveContainer(context.WithoutCancel(ctx), &agentv1.RemoveContainerRequest{ContainerId: id}); err != nil {
			fmt.Fprintln(cmd.ErrOrStderr(), "gearbox: removing the container:", describe(err))
		}
	}
	return containerExit(w.Container)
}

// containerExit turns a terminal container into the CLI's exit status.
func containerExit(ct *agentv1.Container) error {
	if ct.ExitCode != nil {
		if *ct.ExitCode == 0 {
			return nil
		}
		return &exitError{code: int(*ct.ExitCode)}
	}
	return &exitError{code: 125, err: fmt.Errorf("container %s ended %s: %s", ct.Id, ct.State, ct.Message)}
}

func streamLogs(ctx context.Context, c agentv1.AgentClient, id string, follow bool, stdout, stderr io.Writer) error {
	st, err := c.ReadLogs(ctx, &agentv1.ReadLogsRequest{ContainerId: id, Follow: follow})
	if err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		w := stdout
		if m.Stream == agentv1.Stream_STREAM_STDERR {
			w = stderr
		}
		if _, err := w.Write(m.Data); err != nil {
			return err
		}
	}
}

func newPsCmd() *cobra.Command {
	var all bool
	var output string
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := c.GetContainers(ctxOf(cmd), &agentv1.GetContainersRequest{All: all})
			if err != nil {
				return err
			}
			if output == "json" {
				return printContainersJSON(cmd.OutOrStdout(), resp.Containers)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 3, ' ', 0)
			fmt.Fprintln(tw, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS")
			for _, ct := range resp.Containers {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ct.Id, shortImage(ct.Image), quoteCmd(ct.Args, 30),
					ago(ct.CreatedAt.AsTime()), humanStatus(ct))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all containers (default shows running ones)")
	addOutputFlag(cmd, &output)
	return cmd
}

func printContainersJSON(w io.Writer, cs []*agentv1.Container) error {
	args := make([]proto.Message, 0, len(cs))
	for _, c := range cs {
		args = append(args, c)
	}
	return printJSON(w, args...)
}

func shortImage(ref string) string {
	ref = strings.TrimPrefix(ref, "docker.io/library/")
	return strings.TrimPrefix(ref, "docker.io/")
}

func quoteCmd(args []string, max int) string {
	s := strings.Join(args, " ")
	if len(s) > max {
		s = s[:max-1] + "…"
	}
	return fmt.Sprintf("%q", s)
}

func ago(t time.Time) string {
	if t.IsZero() || t.Unix() <= 0 {
		return "-"
	}
	return humanDuration(time.Since(t)) + " ago"
}

func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "less than a second"
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}

func humanStatus(ct *agentv1.Container) string {
	switch ct.State {
	case typesv1.TaskState_TASK_RUNNING:
		return "Up " + humanDuration(time.Since(ct.StartedAt.AsTime()))
	case typesv1.TaskState_TASK_STARTING:
		return "Starting"
	}
	s := strings.TrimPrefix(ct.State.String(), "TASK_")
	s = strings.ToUpper(s[:1]) + strings.ToLower(s[1:])
	if ct.ExitCode != nil {
		s = fmt.Sprintf("%s (%d)", s, *ct.ExitCode)
	}
	if ct.FinishedAt != nil {
		s += " " + ago(ct.FinishedAt.AsTime())
	}
	return s
}

func newInspectCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "inspect ID…",
		Short: "Show a container's details",
		Args:  needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := c.GetContainers(ctxOf(cmd), &agentv1.GetContainersRequest{All: true})
			if err != nil {
				return err
			}
			byID := map[string]*agentv1.Container{}
			for _, ct := range resp.Containers {
				byID[ct.Id] = ct
			}
			var found []*agentv1.Container
			for _, id := range ids {
				ct, ok := byID[id]
				if !ok {
					return &exitError{code: 125, err: fmt.Errorf("container %q not found (gearbox ps -a lists them)", id)}
				}
				found = append(found, ct)
			}
			if output == "json" {
				return printContainersJSON(cmd.OutOrStdout(), found)
			}
			for i, ct := range found {
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				printInspect(cmd.OutOrStdout(), ct)
			}
			return nil
		},
	}
	addOutputFlag(cmd, &output)
	return cmd
}

func printInspect(w io.Writer, ct *agentv1.Container) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) {
		if v != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", k, v)
		}
	}
	tsf := func(t interface{ AsTime() time.Time }, ok bool) string {
		if !ok {
			return ""
		}
		return t.AsTime().Local().Format(time.RFC3339)
	}
	row("ID", ct.Id)
	row("Image", ct.Image)
	row("Image digest", ct.ImageDigest)
	row("Runtime", ct.Runtime)
	row("State", ct.State.String())
	if ct.Reason != typesv1.Reason_REASON_UNSPECIFIED {
		row("Reason", ct.Reason.String())
	}
	row("Message", ct.Message)
	if ct.ExitCode != nil {
		row("Exit code", fmt.Sprint(*ct.ExitCode))
	}
	if ct.Pid != 0 {
		row("Pid", fmt.Sprint(ct.Pid))
	}
	row("Created", tsf(ct.CreatedAt, ct.CreatedAt != nil))
	row("Started", tsf(ct.StartedAt, ct.StartedAt != nil))
	row("Finished", tsf(ct.FinishedAt, ct.FinishedAt != nil))
	row("Command", strings.Join(ct.Args, " "))
	row("Working dir", ct.WorkingDir)
	row("User", ct.User)
	row("Sandbox", ct.Sandbox)
	if ct.AutoRemove {
		row("Auto remove", "true")
	}
	for _, e := range ct.Env {
		row("Env", e)
	}
	keys := make([]string, 0, len(ct.Labels))
	for k := range ct.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		row("Label", k+"="+ct.Labels[k])
	}
	tw.Flush()
}

func newWaitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wait ID…",
		Short: "Wait for containers to end and print their exit codes",
		Args:  needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			for _, id := range ids {
				w, err := c.WaitContainer(ctxOf(cmd), &agentv1.WaitContainerRequest{ContainerId: id})
				if err != nil {
					return err
				}
				if w.Container.ExitCode != nil {
					fmt.Fprintln(cmd.OutOrStdout(), *w.Container.ExitCode)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", w.Container.State, w.Container.Message)
				}
			}
			return nil
		},
	}
}

func newKillCmd() *cobra.Command {
	var signal string
	var grace time.Duration
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] [--grace DURATION] ID…",
		Short: "Signal containers (SIGKILL by default)",
		Long: `Send a signal to containers' main processes, SIGKILL by default.
With --grace and another signal, SIGKILL follows if the container still runs after it.`,
		Example: "  gearbox kill web\n  gearbox kill -s TERM --grace 10s web",
		Args:    needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			req := &agentv1.KillContainerRequest{Signal: signal}
			if grace > 0 {
				req.GracePeriod = durationpb.New(grace)
			}
			return eachArg(cmd, ids, func(c agentv1.AgentClient, id string) (string, error) {
				req.ContainerId = id
				_, err := c.KillContainer(ctxOf(cmd), req)
				return id, err
			})
		},
	}
	cmd.Flags().StringVarP(&signal, "signal", "s", "KILL", "signal name or number")
	cmd.Flags().DurationVar(&grace, "grace", 0, "send SIGKILL after this long if the container still runs")
	return cmd
}

func newRmCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] ID…",
		Short: "Remove containers and their sandboxes",
		Args:  needArgs(1, "a container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			return eachArg(cmd, ids, func(c agentv1.AgentClient, id string) (string, error) {
				_, err := c.RemoveContainer(ctxOf(cmd), &agentv1.RemoveContainerRequest{ContainerId: id, Force: force})
				return id, err
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

func newLogsCmd() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] ID",
		Short: "Print a container's output (stdout and stderr, as kept in its sandbox)",
		Args:  exactArgs(1, "one container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			ctx, stop := signal.NotifyContext(ctxOf(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err = streamLogs(ctx, c, ids[0], follow, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if isCode(err, codes.Canceled) || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new output until the container ends")
	return cmd
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/units"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func addContainerCmds(root *cobra.Command) {
	root.AddCommand(newRunCmd(), newPsCmd(), newInspectCmd(), newWaitCmd(), newKillCmd(), newRmCmd(), newLogsCmd(),
		newUpdateCmd(), newStatsCmd(), newInfoCmd(), newExecCmd(), newDebugCmd(), newAttachCmd())
}

type runOpts struct {
	detach bool
	rm     bool
	name   string
	// spec is what the container is launched with, as task launch takes it.
	spec *specFlags
	// interactive keeps stdin open, tty gives a terminal; detachKeys leave
	// an attached foreground run.
	interactive, tty bool
	detachKeys       string
}

// parseLogOpts reads --log-opt max-size=64k, max-files=3, mode=drop.
func parseLogOpts(driver string, opts []string) (*agentv1.LogOptions, error) {
	if driver == "" && len(opts) == 0 {
		return nil, nil
	}
	lo := &agentv1.LogOptions{Driver: driver}
	for _, o := range opts {
		k, v, ok := strings.Cut(o, "=")
		if !ok {
			return nil, fmt.Errorf("--log-opt %q: write KEY=VALUE (max-size=10m, max-files=3, mode=drop)", o)
		}
		switch k {
		case "max-size":
			n, err := units.ParseSize(v)
			if err != nil {
				return nil, fmt.Errorf("--log-opt max-size: %w", err)
			}
			lo.MaxSize = n
		case "max-files", "max-file":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("--log-opt max-files=%q: write a whole number of at least 1", v)
			}
			lo.MaxFiles = int32(n)
		case "mode":
			if v != "block" && v != "drop" && v != "non-blocking" && v != "blocking" {
				return nil, fmt.Errorf("--log-opt mode=%q: use block or drop", v)
			}
			lo.Mode = map[string]string{"non-blocking": "drop", "blocking": "block"}[v]
			if lo.Mode == "" {
				lo.Mode = v
			}
		default:
			return nil, fmt.Errorf("unknown --log-opt %q: gearbox knows max-size, max-files and mode", k)
		}
	}
	return lo, nil
}

func newRunCmd() *cobra.Command {
	var o runOpts
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [CMD…]",
		Short: "Run a container",
		Long: `Run a container from an image. The agent pulls it if it does not hold it
(--pull if-not-present, the default), before every run (--pull always) or never
(--pull never: import or pull it first), with the registry credentials of its
config (registries.config).

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
	o.spec = addSpecFlags(f)
	f.BoolVarP(&o.interactive, "interactive", "i", false, "keep stdin open for attach (needs -t)")
	f.BoolVarP(&o.tty, "tty", "t", false, "give the container a terminal")
	f.StringVar(&o.detachKeys, "detach-keys", "", "keys that detach from a -it run and leave it running (default ctrl-p,ctrl-q)")
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
		AutoRemove:  o.rm && o.detach, // in the foreground the client removes it after reading all output
		Stdin:       o.interactive,
		Tty:         o.tty,
	}
	if o.tty {
		// The process sees the terminal's size from its start; attach's
		// resizes follow.
		if w, h, err := term.GetSize(int(os.Stdout.Fd())); err == nil && w > 0 && h > 0 {
			req.Size = &agentv1.WindowSize{Width: uint32(w), Height: uint32(h)}
		}
	}
	if len(args) > 1 {
		req.Cmd = &agentv1.StringList{Values: args[1:]}
	}
	if err := o.spec.apply(req); err != nil {
		return &exitError{code: 125, err: err}
	}
	if o.rm && restarts(req) {
		return &exitError{code: 125, err: errors.New("--rm and --restart conflict: a container removed when it ends cannot be restarted")}
	}

	c, closeConn, err := dial(cmd)
	if err != nil {
		return err
	}
	defer closeConn()
	ctx := ctxOf(cmd)
	resp, err := c.LaunchContainer(ctx, req)
	if err != nil {
		code := commandExit(err)
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
	if o.tty {
		// The terminal's keys (ctrl-c…) reach the container through its
		// TTY; no signal forwarding.
		detached, err := attachTo(ctx, c, id, o.interactive, true, true, o.detachKeys)
		var ee *exitError
		if o.rm && !detached && (err == nil || errors.As(err, &ee) && ee.err == nil) {
			c.RemoveContainer(context.WithoutCancel(ctx), &agentv1.RemoveContainerRequest{ContainerId: id})
		}
		return err
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

	var streamErr error
	if req.Log.GetDriver() == "" || req.Log.GetDriver() == "sandbox" || req.Log.GetDriver() == "logrotate" {
		streamErr = streamLogs(ctx, c, logsReq{id: id, follow: true}, cmd.OutOrStdout(), cmd.ErrOrStderr())
	}
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

type logsReq struct {
	id      string
	follow  bool
	tail    *int32 // the last N lines of each stream; nil: all
	since   time.Time
	streams []agentv1.Stream
}

// parseSince reads --since: a duration back from now (10m, 2h) or a time
// (RFC 3339, or a Unix timestamp), as docker logs --since does.
func parseSince(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if secs, err := strconv.ParseFloat(s, 64); err == nil && secs >= 0 {
		return time.Unix(0, int64(secs*1e9)), nil
	}
	return time.Time{}, fmt.Errorf("--since %q: write a duration (10m, 2h), an RFC 3339 time or a Unix timestamp", s)
}

// streamLogs copies a container's output to stdout and stderr. A follow
// that loses the agent (restarted, upgraded) resumes from its cursor once
// the agent is back, for up to a minute: no line is lost or repeated.
func streamLogs(ctx context.Context, c agentv1.AgentClient, r logsReq, stdout, stderr io.Writer) error {
	req := &agentv1.ReadLogsRequest{ContainerId: r.id, Follow: r.follow, Streams: r.streams}
	req.TailLines = r.tail
	if !r.since.IsZero() {
		req.Since = timestamppb.New(r.since)
	}
	var lostSince time.Time
	for {
		err := readLogsOnce(ctx, c, req, stdout, stderr, &lostSince)
		if err == nil || !r.follow || !isCode(err, codes.Unavailable) || ctx.Err() != nil {
			return err
		}
		if lostSince.IsZero() {
			lostSince = time.Now()
		} else if time.Since(lostSince) > time.Minute {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func readLogsOnce(ctx context.Context, c agentv1.AgentClient, req *agentv1.ReadLogsRequest, stdout, stderr io.Writer, lostSince *time.Time) error {
	st, err := c.ReadLogs(ctx, req)
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
		*lostSince = time.Time{}
		w := stdout
		if m.Stream == agentv1.Stream_STREAM_STDERR {
			w = stderr
		}
		if _, err := w.Write(m.Data); err != nil {
			return err
		}
		// A resumed read continues after this chunk, with no tail or since.
		req.Cursor, req.TailLines, req.Since = m.Cursor, nil, nil
	}
}

func newPsCmd() *cobra.Command {
	req := &agentv1.GetContainersRequest{}
	cmd := &cobra.Command{Use: "ps", Short: "List containers", Args: cobra.NoArgs}
	cmd.Flags().BoolVarP(&req.All, "all", "a", false, "show all containers (default shows running ones)")
	return listCmd(cmd, dial, agentv1.AgentClient.GetContainers, req,
		(*agentv1.GetContainersResponse).GetContainers, printContainers)
}

func printContainers(w io.Writer, r *agentv1.GetContainersResponse) error {
	return table(w, "CONTAINER ID\tIMAGE\tCOMMAND\tCREATED\tSTATUS\tNETWORK\tIP\tPORTS", func(tw io.Writer) {
		for _, ct := range r.Containers {
			network := ct.Network
			if network == "" {
				network = "host"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", ct.Id, shortImage(ct.Image), quoteCmd(ct.Args, 30),
				ago(ct.CreatedAt.AsTime()), humanStatus(ct), network, strings.Join(ct.IpAddresses, ","), formatPorts(ct.PortMappings))
		}
	})
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
		return "Up " + humanDuration(time.Since(ct.StartedAt.AsTime())) + healthSuffix(ct)
	case typesv1.TaskState_TASK_STARTING:
		if e := ct.LastExit; ct.NextRestartAt != nil && e != nil {
			// Docker's words: the last exit's status and how long ago.
			return fmt.Sprintf("Restarting (%d) %s", e.GetExitCode(), ago(e.Time.AsTime()))
		}
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
			c, closeConn, err := dialFor(cmd, output, dial)
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
				return printJSON(cmd.OutOrStdout(), protoList(found)...)
			}
			for i, ct := range found {
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				printInspect(cmd.OutOrStdout(), ct)
				if ct.State == typesv1.TaskState_TASK_RUNNING {
					if u, err := c.GetContainerUsage(ctxOf(cmd), &agentv1.GetContainerUsageRequest{ContainerIds: []string{ct.Id}}); err == nil && len(u.Usages) == 1 {
						printUsage(cmd.OutOrStdout(), u.Usages[0])
					}
				}
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
	if ct.Health != typesv1.HealthState_HEALTH_STATE_UNSPECIFIED {
		row("Health", fmt.Sprintf("%s (%d failures in a row, checked %s)", healthWord(ct.Health), ct.HealthFailures, tsf(ct.HealthCheckedAt, ct.HealthCheckedAt != nil)))
		row("Health output", strings.TrimSpace(ct.HealthOutput))
	}
	if ct.ExitCode != nil {
		row("Exit code", fmt.Sprint(*ct.ExitCode))
	}
	if ct.Pid != 0 {
		row("Pid", fmt.Sprint(ct.Pid))
	}
	printRestarts(row, ct)
	row("Created", tsf(ct.CreatedAt, ct.CreatedAt != nil))
	row("Started", tsf(ct.StartedAt, ct.StartedAt != nil))
	row("Finished", tsf(ct.FinishedAt, ct.FinishedAt != nil))
	row("Command", strings.Join(ct.Args, " "))
	row("Working dir", ct.WorkingDir)
	row("User", ct.User)
	row("Sandbox", ct.Sandbox)
	if ct.Network != "" {
		row("Network", ct.Network)
		row("Hostname", ct.Hostname)
		row("IP addresses", strings.Join(ct.IpAddresses, ", "))
		row("Ports", formatPorts(ct.PortMappings))
	}
	if l := ct.Log; l != nil {
		desc := l.Driver
		if l.Driver == "logrotate" {
			desc += fmt.Sprintf(" (max-size %s, max-files %d, mode %s)", units.FormatSize(l.MaxSize), l.MaxFiles, l.Mode)
		}
		row("Logger", desc)
	}
	if ct.Privileged {
		row("Privileged", "true")
	}
	if g := ct.KillPolicy.GetGracePeriod(); g != nil {
		row("Kill policy", fmt.Sprintf("SIGTERM, SIGKILL after %s", g.AsDuration()))
	}
	if ct.PullPolicy != typesv1.PullPolicy_PULL_POLICY_UNSPECIFIED {
		row("Pull policy", ct.PullPolicy.String())
	}
	if r := ct.Resources; r != nil {
		if r.Cpus > 0 {
			row("CPUs", strconv.FormatFloat(r.Cpus, 'f', -1, 64))
		}
		if r.Memory > 0 {
			row("Memory", units.Human(r.Memory))
		}
		if r.MemorySoft > 0 {
			row("Memory reservation", units.Human(r.MemorySoft))
		}
		if r.Pids > 0 {
			row("Pids limit", strconv.FormatInt(r.Pids, 10))
		}
	}
	if ct.LoggingDegraded != "" {
		row("Logging", "DEGRADED: "+ct.LoggingDegraded)
	}
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
		Short: "Signal containers (by default as their kill policy says, else SIGKILL)",
		Long: `Send a signal to containers' main processes. Without -s and --grace, a
container launched with --stop-timeout gets SIGTERM, then SIGKILL once that
has passed (it is TASK_KILLING meanwhile); any other gets SIGKILL.
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
	cmd.Flags().StringVarP(&signal, "signal", "s", "", "signal name or number (default: the kill policy's, else KILL)")
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
	var (
		follow         bool
		tail, since    string
		stdout, stderr bool
	)
	cmd := &cobra.Command{
		Use:   "logs [-f] [--tail N] [--since T] [--stdout|--stderr] ID",
		Short: "Print a container's output (stdout and stderr, as kept in its sandbox)",
		Long: `Print a container's output, across its rotated files, in order.

With -f, keep printing new output until the container ends; a follow that
loses the agent (restart, upgrade) resumes where it stopped once the agent is
back.`,
		Args: exactArgs(1, "one container ID"),
		RunE: func(cmd *cobra.Command, ids []string) error {
			r := logsReq{id: ids[0], follow: follow}
			if tail != "all" {
				n, err := strconv.ParseInt(tail, 10, 32)
				if err != nil || n < 0 {
					return &exitError{code: 125, err: fmt.Errorf("--tail %q: write a number of lines or all", tail)}
				}
				t := int32(n)
				r.tail = &t
			}
			if since != "" {
				t, err := parseSince(since, time.Now())
				if err != nil {
					return &exitError{code: 125, err: err}
				}
				r.since = t
			}
			if stdout && !stderr {
				r.streams = []agentv1.Stream{agentv1.Stream_STREAM_STDOUT}
			} else if stderr && !stdout {
				r.streams = []agentv1.Stream{agentv1.Stream_STREAM_STDERR}
			}
			c, closeConn, err := dial(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			ctx, stop := signal.NotifyContext(ctxOf(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			err = streamLogs(ctx, c, r, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if isCode(err, codes.Canceled) || errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVarP(&follow, "follow", "f", false, "keep printing new output until the container ends")
	f.StringVarP(&tail, "tail", "n", "all", "start at the last N lines of each stream")
	f.StringVar(&since, "since", "", "start at output written since a time (2026-11-25T10:00:00Z) or for a duration (10m)")
	f.BoolVar(&stdout, "stdout", false, "only stdout")
	f.BoolVar(&stderr, "stderr", false, "only stderr")
	return cmd
}

// parseLabels reads -l K=V flags; nil when none.
func parseLabels(labels []string) map[string]string {
	var out map[string]string
	for _, l := range labels {
		k, v, _ := strings.Cut(l, "=")
		if out == nil {
			out = map[string]string{}
		}
		out[k] = v
	}
	return out
}

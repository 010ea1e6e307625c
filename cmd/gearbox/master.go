package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/tlsutil"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/master"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// defaultMaster is the master's unix socket on this host: plaintext TCP
// is refused (master/auth.go), and a local client needs no TLS there.
const defaultMaster = "unix://" + master.DefaultSocket

func newMasterCmd() *cobra.Command {
	var (
		flagged     = master.DefaultConfig()
		configPath  string
		printConfig bool
		debug       bool
	)
	cmd := &cobra.Command{
		Use:   "master",
		Short: "Run the master: agents register with it, operators launch tasks through it",
		Long: `Run the compact master. Agents started with --master ADDR register with it and keep
a stream open; it keeps the registry (agents, tasks and their states) in
WORK_DIR/registry.db, marks agents that miss their pings unreachable, places
tasks and serves operators (gearbox agents, tasks, task launch, events).

An agent is missed after --agent-ping-timeout × --max-agent-ping-timeouts
without a heartbeat (15 s by default).

With --tls-cert, --tls-key and --tls-client-ca the master speaks mutual TLS.
--agent-cn, --readonly-cn and --operator-cn then say who may do what by the
common name of the client's certificate; once any of them is given, only
those named may (none given: every certificate the CA signed may do
everything).

On --socket (default ` + master.DefaultSocket + `, mode 0600) root and the
master's own user may do everything: the kernel says who connects, and no
container can reach the path. That is how the CLI and agents on this host
talk to a master without TLS (gearbox agent --master unix://PATH).
Plaintext TCP carries no identity and every container on the host shares
its network, so without TLS it serves health only, unless --insecure:
then anyone who reaches --listen, every container on this host included,
may register agents, launch and kill tasks and mark agents gone. Without
TLS the master listens on loopback only, unless --insecure.

With --etcd-endpoints the registry is kept in etcd, and every master started
with the same endpoints (and --etcd-prefix) takes part in an election: one
leads, the others stand by and answer every call but GetMasters and
GetHealth with the leader's address (clients follow it). A leader that dies
is replaced after about --election-ttl; one that loses etcd's quorum keeps
serving reads and refuses changes until etcd answers again.

--config FILE reads these settings from a TOML file (examples/master.toml):
each key is a flag's name with underscores; flags override the file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := master.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = master.LoadConfig(configPath); err != nil {
					return &exitError{code: 125, err: err}
				}
			}
			applyFlags(cmd.Flags(), &flagged, &cfg, masterFlags)
			if printConfig {
				return toml.NewEncoder(cmd.OutOrStdout()).Encode(cfg)
			}
			ctx, stop := signal.NotifyContext(ctxOf(cmd), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			m, err := master.New(cfg, newLogger(debug))
			if err != nil {
				return &exitError{code: 125, err: err}
			}
			if err := m.Run(ctx); err != nil {
				return fmt.Errorf("master: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML config file (see examples/master.toml)")
	defineFlags(f, &flagged, masterFlags)
	f.BoolVar(&printConfig, "print-config", false, "print the effective config and exit")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}

// masterFlags are the master's config keys that flags override.
var masterFlags = []configFlag[master.Config]{
	{"listen", "address for agents and operators (host:port)", func(c *master.Config) any { return &c.Listen }},
	{"work-dir", "holds the registry (registry.db)", func(c *master.Config) any { return &c.WorkDir }},
	{"agent-ping-timeout", "agents heartbeat this often; one missed ping is this long", func(c *master.Config) any { return &c.AgentPingTimeout }},
	{"max-agent-ping-timeouts", "missed pings before an agent is unreachable", func(c *master.Config) any { return &c.MaxAgentPingTimeouts }},
	{"agent-removal-rate-limit", `mark missed agents unreachable no faster than N/DURATION, e.g. "1/10mins" (default: no limit)`, func(c *master.Config) any { return &c.AgentRemovalRateLimit }},
	{"registry-max-agent-age", "an agent unreachable this long is gone and its tasks TASK_GONE", func(c *master.Config) any { return &c.RegistryMaxAgentAge }},
	{"event-buffer", "events kept for subscribers to resume from", func(c *master.Config) any { return &c.EventBuffer }},
	{"subscriber-lag", "events a subscriber may fall behind before it is cut off", func(c *master.Config) any { return &c.SubscriberLag }},
	{"subscriber-heartbeat", "a HEARTBEAT event after this long without one", func(c *master.Config) any { return &c.SubscriberHeartbeat }},
	{"subscriber-batch-window", "wait this long for more events before sending to a subscriber (0: at once)", func(c *master.Config) any { return &c.SubscriberBatchWindow }},
	{"metrics-listen", "serve Prometheus metrics on this address (host:port)", func(c *master.Config) any { return &c.MetricsListen }},
	{"metrics-pprof", "also serve Go's profiles at /debug/pprof/ on --metrics-listen", func(c *master.Config) any { return &c.MetricsPprof }},
	{"tls-cert", "the master's certificate (mutual TLS with --tls-key and --tls-client-ca)", func(c *master.Config) any { return &c.TLSCert }},
	{"tls-key", "the master's key", func(c *master.Config) any { return &c.TLSKey }},
	{"tls-client-ca", "CA that signs agents' and operators' certificates", func(c *master.Config) any { return &c.TLSClientCA }},
	{"insecure", "let plaintext TCP clients do everything (anyone who reaches --listen, every container on this host included); needed to listen without TLS on an address other hosts reach", func(c *master.Config) any { return &c.Insecure }},
	{"socket", `unix socket on which root and the master's user may do everything ("" for none)`, func(c *master.Config) any { return &c.Socket }},
	{"agent-cn", "certificate common names that may register as agents (comma-separated or repeated)", func(c *master.Config) any { return &c.AgentCNs }},
	{"readonly-cn", "certificate common names that may read state and events", func(c *master.Config) any { return &c.ReadOnlyCNs }},
	{"operator-cn", "certificate common names that may also launch and kill tasks and mark agents gone", func(c *master.Config) any { return &c.OperatorCNs }},
	{"allocation-interval", "offer agents' free resources to frameworks at least this often", func(c *master.Config) any { return &c.AllocationInterval }},
	{"offer-timeout", "rescind an offer not used this long (0: never)", func(c *master.Config) any { return &c.OfferTimeout }},
	{"framework-heartbeat", "a HEARTBEAT event to a framework after this long without an event", func(c *master.Config) any { return &c.FrameworkHeartbeat }},
	{"status-update-retry", "resend a status update a framework has not acknowledged after this long", func(c *master.Config) any { return &c.StatusUpdateRetry }},
	{"agent-identity", "pin an agent ID to a certificate name, ID=CN: only CN registers as ID, and CN only as its pinned IDs (repeatable)", func(c *master.Config) any { return &c.AgentIdentities }},
	{"max-agents-per-identity", "agents (active or unreachable) one certificate name may hold; more registrations are refused", func(c *master.Config) any { return &c.MaxAgentsPerIdentity }},
	{"max-agent-tasks", "tasks an agent may report at registration, and adopted tasks it may hold", func(c *master.Config) any { return &c.MaxAgentTasks }},
	{"max-agent-cpus", "CPUs an agent may offer", func(c *master.Config) any { return &c.MaxAgentCPUs }},
	{"max-agent-memory", "memory an agent may offer", func(c *master.Config) any { return &c.MaxAgentMemory }},
	{"max-agent-disk", "disk an agent may offer", func(c *master.Config) any { return &c.MaxAgentDisk }},
	{"etcd-endpoints", "keep the registry in etcd at these client URLs and elect a leader among the masters that share it (comma-separated; default: bbolt in --work-dir, one master)", func(c *master.Config) any { return &c.EtcdEndpoints }},
	{"etcd-ca", "CA that signs etcd's server certificate", func(c *master.Config) any { return &c.EtcdCA }},
	{"etcd-cert", "client certificate for etcd (with --etcd-key)", func(c *master.Config) any { return &c.EtcdCert }},
	{"etcd-key", "the key of --etcd-cert", func(c *master.Config) any { return &c.EtcdKey }},
	{"etcd-prefix", "prefix of the master's keys in etcd", func(c *master.Config) any { return &c.EtcdPrefix }},
	{"election-ttl", "the lease of the leader's election key: a leader that dies is replaced after about this long (whole seconds, at least 2s)", func(c *master.Config) any { return &c.ElectionTTL }},
	{"advertise", "the address (host:port) other masters send agents and clients to when this master leads (default: --listen)", func(c *master.Config) any { return &c.Advertise }},
}

var currentMaster string

func masterAddress(cmd *cobra.Command) string {
	if a, _ := cmd.Flags().GetString("master"); a != "" {
		return a
	}
	if a := os.Getenv("GEARBOX_MASTER"); a != "" {
		return a
	}
	return defaultMaster
}

// dialMaster connects to the leading master of --master's list (one
// master, or a replicated master's several): every call goes to the
// leader, following a standby's answer (internal/leaderconn).
func dialMaster(cmd *cobra.Command) (masterv1.OperatorClient, func(), error) {
	addr := masterAddress(cmd)
	masters, err := leaderconn.ParseList(addr)
	if err != nil {
		return nil, nil, &exitError{code: 125, err: fmt.Errorf("--master (or GEARBOX_MASTER): %w", err)}
	}
	creds := insecure.NewCredentials()
	ca, cert, key := tlsFlag(cmd, "tls-ca", "GEARBOX_TLS_CA"), tlsFlag(cmd, "tls-cert", "GEARBOX_TLS_CERT"), tlsFlag(cmd, "tls-key", "GEARBOX_TLS_KEY")
	if ca != "" || cert != "" || key != "" {
		tc, err := tlsutil.Client(ca, cert, key)
		if err != nil {
			return nil, nil, &exitError{code: 125, err: fmt.Errorf("--tls-ca, --tls-cert, --tls-key: %w", err)}
		}
		creds = credentials.NewTLS(tc)
	}
	lc, err := leaderconn.New(leaderconn.Config{Masters: masters, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20))}})
	if err != nil {
		return nil, nil, &exitError{code: 125, err: fmt.Errorf("--master %q: %w", addr, err)}
	}
	currentMaster = addr
	return masterv1.NewOperatorClient(lc), func() { lc.Close() }, nil
}

func fmtResources(r *masterv1.Resources) string {
	return fmt.Sprintf("%g/%s", r.GetCpus(), units.Human(r.GetMemoryBytes()))
}

func age(t interface{ AsTime() time.Time }) string {
	if t == nil {
		return "-"
	}
	return time.Since(t.AsTime()).Round(time.Second).String()
}

func newAgentsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "agents", Short: "List the agents the master knows", Args: cobra.NoArgs}
	return listCmd(cmd, dialMaster, masterv1.OperatorClient.GetAgents, &masterv1.GetAgentsRequest{},
		(*masterv1.GetAgentsResponse).GetAgents, printAgents)
}

func printAgents(w io.Writer, r *masterv1.GetAgentsResponse) error {
	return table(w, "ID\tHOSTNAME\tSTATE\tCONNECTED\tCPUS/MEM USED\tCPUS/MEM TOTAL\tATTRIBUTES\tLAST HEARTBEAT", func(tw io.Writer) {
		for _, a := range r.Agents {
			var attrs []string
			for k, v := range a.Attributes {
				attrs = append(attrs, k+":"+v)
			}
			state := strings.TrimPrefix(a.State.String(), "AGENT_")
			if a.GoneByOperator {
				state += " (by operator)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s ago\n", a.Id, a.Hostname, state, a.Connected,
				fmtResources(a.Used), fmtResources(a.Resources), strings.Join(sortedStrings(attrs), ";"), age(a.LastHeartbeat))
		}
	})
}

func newTasksCmd() *cobra.Command {
	req := &masterv1.GetTasksRequest{}
	cmd := &cobra.Command{Use: "tasks", Short: "List the tasks the master placed, with their latest states", Args: cobra.NoArgs}
	cmd.Flags().StringVar(&req.AgentId, "agent-id", "", "only this agent's tasks")
	return listCmd(cmd, dialMaster, masterv1.OperatorClient.GetTasks, req,
		(*masterv1.GetTasksResponse).GetTasks, func(w io.Writer, r *masterv1.GetTasksResponse) error { return printTasks(w, r.Tasks) })
}

func printTasks(w io.Writer, tasks []*masterv1.Task) error {
	return table(w, "ID\tAGENT\tIMAGE\tSTATE\tREASON\tEXIT\tRESTARTS\tCPUS/MEM\tIP\tPORTS\tMESSAGE", func(tw io.Writer) {
		for _, t := range tasks {
			exit := "-"
			if t.ExitCode != nil {
				exit = fmt.Sprint(t.GetExitCode())
			}
			reason := strings.TrimPrefix(t.Reason.String(), "REASON_")
			if t.Reason == 0 {
				reason = "-"
			}
			msg := t.Message
			if len(msg) > 60 {
				msg = msg[:57] + "..."
			}
			state := t.State.String()
			if t.Healthy != nil {
				state += map[bool]string{true: " (healthy)", false: " (unhealthy)"}[t.GetHealthy()]
			}
			ip, ports := orDash(strings.Join(t.IpAddresses, ",")), orDash(formatPorts(t.PortMappings))
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", t.Id, t.AgentId, t.Image, state, reason, exit, t.RestartCount, fmtResources(t.Resources), ip, ports, msg)
		}
	})
}

// newTaskLaunchCmd is task launch: run's container flags (specflags.go)
// and where to place the task.
func newTaskLaunchCmd() *cobra.Command {
	var (
		agentID, output string
		id              string
		constraints     []string
		partitionAware  bool
		spec            *specFlags
	)
	launch := &cobra.Command{
		Use:   "launch [--agent-id ID | --constraint k:v…] [run's flags: -e, -u, -w, --cpus, --memory, --pull, --stop-timeout, …] IMAGE [CMD…]",
		Short: "Place a task on an agent that has the resources free, and start it there",
		Long: `Place a task on an agent that has the resources free, and start it there.

The task's container takes the same flags as gearbox run (environment, user,
working directory, entrypoint, labels, runtime, resources, logger, kill
policy, pull policy); its ID is the task's.`,
		Example: `  gearbox task launch --cpus 0.5 -m 64m -e MODE=prod --stop-timeout 10 registry:5000/web:1.2
  gearbox task launch --constraint rack:r1 --pull always -u nobody -w /tmp busybox sh -c 'id; pwd'`,
		Args: needArgs(1, "an IMAGE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			req := &masterv1.LaunchTaskRequest{TaskId: id, Image: args[0], Command: args[1:], AgentId: agentID,
				Constraints: constraints, PartitionAware: &partitionAware}
			if req.TaskId == "" {
				req.TaskId = newTaskID()
			}
			ct := &agentv1.LaunchContainerRequest{Image: args[0]}
			if len(args) > 1 {
				ct.Cmd = &agentv1.StringList{Values: args[1:]}
			}
			if err := spec.apply(ct); err != nil {
				return &exitError{code: 125, err: err}
			}
			req.Container = ct
			// Older masters read only these.
			if r := ct.GetResources(); r != nil {
				req.Resources = &masterv1.Resources{Cpus: r.GetCpus(), MemoryBytes: r.GetMemory()}
			}
			for _, c := range constraints {
				if _, _, err := master.ParseConstraint(c); err != nil {
					return &exitError{code: 125, err: err}
				}
			}
			c, closeConn, err := dialMaster(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			resp, err := c.LaunchTask(ctxOf(cmd), req)
			if err != nil {
				return err
			}
			if output == "json" {
				return printJSON(cmd.OutOrStdout(), resp.Task)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", resp.Task.Id, resp.Task.AgentId)
			return nil
		},
	}
	lf := launch.Flags()
	lf.SetInterspersed(false)
	lf.StringVar(&id, "id", "", "task ID (default: a new one)")
	lf.StringVar(&agentID, "agent-id", "", "launch on this agent")
	lf.StringArrayVar(&constraints, "constraint", nil, "launch on an agent with this attribute (ATTRIBUTE:VALUE; repeatable)")
	lf.BoolVar(&partitionAware, "partition-aware", true, "the task becomes TASK_UNREACHABLE while its agent is unreachable; false: TASK_LOST")
	spec = addSpecFlags(lf)
	addOutputFlag(launch, &output)

	return launch
}

func newTaskCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "task", Short: "Launch and kill tasks through the master"}
	var grace time.Duration
	kill := &cobra.Command{
		Use:   "kill [--grace DURATION] ID…",
		Short: "Kill tasks (as their kill policy says, else SIGKILL; with --grace, SIGTERM first)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := dialMaster(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			failed := false
			for _, id := range args {
				req := &masterv1.KillTaskRequest{TaskId: id}
				if cmd.Flags().Changed("grace") {
					req.GracePeriod = durationpb.New(grace) // named: overrides the kill policy
				}
				if _, err := c.KillTask(ctxOf(cmd), req); err != nil {
					fmt.Fprintln(cmd.ErrOrStderr(), "gearbox:", describe(err))
					failed = true
					continue
				}
				fmt.Fprintln(cmd.OutOrStdout(), id)
			}
			if failed {
				return &exitError{code: 125}
			}
			return nil
		},
	}
	kill.Flags().DurationVar(&grace, "grace", 0, "SIGTERM, then SIGKILL after this long (0: SIGKILL now); default: the task's kill policy (--stop-timeout)")
	cmd.AddCommand(newTaskLaunchCmd(), kill)
	return cmd
}

func newTaskID() string {
	return "task-" + strings.ReplaceAll(time.Now().UTC().Format("20060102-150405.000"), ".", "-")
}

func newMarkGoneCmd() *cobra.Command {
	return masterActCmd("mark-gone ID", "Tell the master an agent is gone for good: its tasks become TASK_GONE_BY_OPERATOR and it is refused if it returns",
		func(ctx context.Context, c masterv1.OperatorClient, id string) error {
			_, err := c.MarkAgentGone(ctx, &masterv1.MarkAgentGoneRequest{AgentId: id})
			return err
		})
}

// masterActCmd is a command that has the master act on the one ID it is
// given, and prints the ID once it has.
func masterActCmd(use, short string, act func(context.Context, masterv1.OperatorClient, string) error) *cobra.Command {
	return &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, closeConn, err := dialMaster(cmd)
			if err != nil {
				return err
			}
			defer closeConn()
			if err := act(ctxOf(cmd), c, args[0]); err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return nil
		},
	}
}

func newEventsCmd() *cobra.Command {
	var (
		output string
		since  uint64
	)
	cmd := &cobra.Command{
		Use:   "events [--since SEQ]",
		Short: "Follow the master's events (a snapshot first, or every event after SEQ)",
		Long: `Follow the master's events: a snapshot first, or every event after SEQ.

With a replicated master (--master a,b,c) the stream follows the leader: when
it changes, events resume after the last one received; if the new leader no
longer has them, a new snapshot is taken and stderr says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, closeConn, err := dialFor(cmd, output, dialMaster)
			if err != nil {
				return err
			}
			defer closeConn()
			ctx, stop := signal.NotifyContext(ctxOf(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			w := cmd.OutOrStdout()
			return followEvents(ctx, c, since, cmd.ErrOrStderr(), func(ev *masterv1.Event) {
				if output == "json" {
					b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(ev)
					fmt.Fprintln(w, string(b))
					return
				}
				printEvent(w, ev)
			})
		},
	}
	cmd.Flags().Uint64Var(&since, "since", 0, "resume after this event's sequence number")
	addOutputFlag(cmd, &output)
	return cmd
}

// followEvents subscribes after since (0: a snapshot first) and hands each
// event to show until ctx ends or the stream ends for good. A stream the
// master ends as unavailable (its leader gone, a standby's refusal) is
// resumed after the last event received, at the leader; if that point is
// lost (OutOfRange: a new leader's events are numbered apart), a new
// snapshot is taken, and stderr says so.
func followEvents(ctx context.Context, c masterv1.OperatorClient, since uint64, stderr io.Writer, show func(*masterv1.Event)) error {
	last, heard, resuming := since, false, false
	backoff := 100 * time.Millisecond
	for {
		err := receiveEvents(ctx, c, last, func(ev *masterv1.Event) {
			heard = true
			if ev.Seq != 0 {
				last = ev.Seq
			}
			if resuming {
				resuming, backoff = false, 100*time.Millisecond
				fmt.Fprintf(stderr, "gearbox: events resumed at the leader\n")
			}
			show(ev)
		})
		_, notLeader := typesv1.LeaderHint(err)
		switch {
		case ctx.Err() != nil || errors.Is(err, io.EOF):
			return nil
		case status.Code(err) == codes.OutOfRange && heard:
			fmt.Fprintf(stderr, "gearbox: the master no longer has the events after %d (%s): taking a new snapshot\n", last, status.Convert(err).Message())
			last = 0
			continue
		case notLeader, status.Code(err) == codes.Unavailable && heard:
			// A standby (the connection goes to the leader it named next),
			// no master leads yet, or the leader went: resume there.
		default:
			// Never connected (as any other command would say), or an
			// error of the request (--since beyond the buffer, …).
			return err
		}
		if !resuming && heard {
			resuming = true
			fmt.Fprintf(stderr, "gearbox: the event stream ended (%s); resuming after event %d at the leader\n", describe(err), last)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// receiveEvents is one subscription.
func receiveEvents(ctx context.Context, c masterv1.OperatorClient, since uint64, show func(*masterv1.Event)) error {
	st, err := c.Subscribe(ctx, &masterv1.SubscribeRequest{Since: since})
	if err != nil {
		return err
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		for _, ev := range resp.Events {
			show(ev)
		}
	}
}

func printEvent(w io.Writer, ev *masterv1.Event) {
	t := ev.Time.AsTime().Local().Format("15:04:05.000")
	switch ev.Type {
	case masterv1.Event_SUBSCRIBED:
		s := ev.Subscribed.GetState()
		fmt.Fprintf(w, "%d\t%s\tSUBSCRIBED\t%d agents, %d tasks\n", ev.Seq, t, len(s.GetAgents()), len(s.GetTasks()))
		for _, a := range s.GetAgents() {
			fmt.Fprintf(w, "\t\tagent %s (%s) %s\n", a.Id, a.Hostname, a.State)
		}
		for _, tk := range s.GetTasks() {
			fmt.Fprintf(w, "\t\ttask %s on %s %s\n", tk.Id, tk.AgentId, tk.State)
		}
	case masterv1.Event_TASK_ADDED, masterv1.Event_TASK_UPDATED:
		tk := ev.Task
		extra := ""
		if tk.Reason != 0 {
			extra = " " + tk.Reason.String()
		}
		if tk.ExitCode != nil {
			extra += fmt.Sprintf(" exit %d", tk.GetExitCode())
		}
		fmt.Fprintf(w, "%d\t%s\t%s\ttask %s on %s %s%s\n", ev.Seq, t, ev.Type, tk.Id, tk.AgentId, tk.State, extra)
	case masterv1.Event_AGENT_ADDED, masterv1.Event_AGENT_REMOVED:
		fmt.Fprintf(w, "%d\t%s\t%s\tagent %s (%s) %s\n", ev.Seq, t, ev.Type, ev.Agent.Id, ev.Agent.Hostname, ev.Agent.State)
	default:
		fmt.Fprintf(w, "%d\t%s\t%s\n", ev.Seq, t, ev.Type)
	}
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

func protoList[T proto.Message](in []T) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}

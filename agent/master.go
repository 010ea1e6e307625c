package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/checks"
	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/launchspec"
	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/tlsutil"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/internal/version"
	"github.com/gearboxd/gearbox/isolators"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// LabelTask marks a container that is a master's task (its ID is the
// task's ID). Only these are reported to the master.
const LabelTask = "gearbox.task"

// masterClient keeps the agent registered with its master: one stream,
// re-established with backoff; heartbeats; status updates of task
// containers, checkpointed under work_dir/meta/updates before they are
// sent and resent until the master acknowledges them; launches and kills
// from the master.
//
// What the agent keeps for it (work_dir/meta):
//
//	master.json               the agent ID the master assigned
//	updates/<seq>.json        status updates not yet acknowledged, in order
type masterClient struct {
	log  *slog.Logger
	cp   *checkpoint
	adm  *admission // its containerizer is set once built
	gate *gate
	node nodeInfo
	// onID hears the agent ID the master assigned.
	onID func(id string)
	addr string
	dir  string // meta/updates

	mu      sync.Mutex
	pending []*pendingUpdate // by seq
	nextSeq uint64
	last    map[string]typesv1.TaskState // task → state of its last queued update

	// health: task → what its health check last said, sent with each of
	// its updates.
	health map[string]taskHealth

	agentID string
	// lc reaches the leading master of those addr lists (set by run).
	lc    *leaderconn.Conn
	wake  chan struct{}
	creds credentials.TransportCredentials
	// sess is the live session, nil between them.
	sess *masterSession
	// refused says why the master refused this agent for good.
	refused string
	// tasks are the launches and kills the master asked for; run waits
	// for them, so that none outlives the containerizer.
	tasks sync.WaitGroup
	// launching are the task launches under way (a pull can take long),
	// so that a kill ends the launch rather than miss it.
	launching map[string]*taskLaunching
	// lastRestart: task → restartKey of its last queued update.
	lastRestart map[string]string
}

// taskLaunching is a task launch under way.
type taskLaunching struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when launchTask has returned
	killed bool          // under mc.mu: a kill cancelled it and reports for it
}

type pendingUpdate struct {
	Seq      uint64            `json:"seq"`
	UUID     string            `json:"uuid"`
	TaskID   string            `json:"task_id"`
	State    typesv1.TaskState `json:"state"`            // by name, as when it was a string
	Reason   typesv1.Reason    `json:"reason,omitempty"` // by name
	Message  string            `json:"message,omitempty"`
	ExitCode *int32            `json:"exit_code,omitempty"`
	Time     time.Time         `json:"time"`
	// Healthy and HealthOutput: what the task's health check last said
	// (Mesos's TaskStatus.healthy), when it has one.
	Healthy      *bool  `json:"healthy,omitempty"`
	HealthOutput string `json:"health_output,omitempty"`
	// The task's restarts (its restart policy): how many, and how the last
	// restarted process ended.
	RestartCount int                        `json:"restart_count,omitempty"`
	LastExit     *containerizer.ProcessExit `json:"last_exit,omitempty"`
	// Where the task's container is reachable (CNI networks).
	IPs          []string                `json:"ips,omitempty"`
	PortMappings []isolators.PortMapping `json:"port_mappings,omitempty"`
	sent         *masterSession
}

type masterMeta struct {
	AgentID string `json:"agent_id"`
	Master  string `json:"master"`
}

type masterSession struct {
	leader string // the master's address (of the configured list)
	mu     sync.Mutex
	stream grpc.BidiStreamingClient[masterv1.AgentMessage, masterv1.MasterMessage]
}

func (s *masterSession) send(msg *masterv1.AgentMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(msg)
}

// nodeInfo is what the agent tells the master of itself at registration.
type nodeInfo struct {
	Address    string // the Agent API's TCP address
	Attributes map[string]string
}

// masterDeps is what the master client takes from the agent, so that it
// reaches into no *Agent.
type masterDeps struct {
	log *slog.Logger
	// cp holds the agent ID the master assigned and the status updates
	// not yet acknowledged (meta/updates).
	cp *checkpoint
	// adm admits and runs the master's launches; its containerizer is set
	// once built, before the first session.
	adm *admission
	// gate gives the context that ends with the agent's streams.
	gate *gate
	node nodeInfo
	tls  MasterTLS
	// onID hears the agent ID the master assigned (nil: nobody listens).
	onID func(id string)
}

func newMasterClient(addr string, d masterDeps) (*masterClient, error) {
	mc := &masterClient{log: d.log, cp: d.cp, adm: d.adm, gate: d.gate, node: d.node, onID: d.onID,
		addr: addr, dir: d.cp.updatesDir(), last: map[string]typesv1.TaskState{}, health: map[string]taskHealth{}, lastRestart: map[string]string{}, wake: make(chan struct{}, 1),
		creds: insecure.NewCredentials()}
	if mc.onID == nil {
		mc.onID = func(string) {}
	}
	if mt := d.tls; mt.CA != "" {
		tc, err := tlsutil.Client(mt.CA, mt.Cert, mt.Key)
		if err != nil {
			return nil, fmt.Errorf("config key master_tls: %w", err)
		}
		mc.creds = credentials.NewTLS(tc)
	}
	if err := os.MkdirAll(mc.dir, 0o700); err != nil {
		return nil, err
	}
	meta, err := d.cp.loadMasterMeta()
	if err != nil {
		return nil, err
	}
	mc.agentID = meta.AgentID
	entries, err := os.ReadDir(mc.dir)
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		p := filepath.Join(mc.dir, e.Name())
		if !strings.HasSuffix(e.Name(), ".json") {
			os.Remove(p) // a write the agent did not finish
			continue
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var u pendingUpdate
		if err := json.Unmarshal(data, &u); err != nil {
			return nil, mc.cp.corrupt(p, err)
		}
		mc.pending = append(mc.pending, &u)
		mc.nextSeq = max(mc.nextSeq, u.Seq)
		mc.last[u.TaskID] = u.State
		mc.lastRestart[u.TaskID] = restartKey(u.RestartCount, u.Message, u.LastExit)
	}
	sort.Slice(mc.pending, func(i, j int) bool { return mc.pending[i].Seq < mc.pending[j].Seq })
	return mc, nil
}

// observe turns a task container's change of state into a status update.
// It is the containerizer's OnChange hook: it must not call back into the
// containerizer.
func (mc *masterClient) observe(c containerizer.Container, removed bool) {
	if c.Labels[LabelTask] == "" {
		return
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if removed {
		delete(mc.last, string(c.ID))
		delete(mc.health, string(c.ID))
		delete(mc.lastRestart, string(c.ID))
		return
	}
	state, rk := reportedState(c), ""
	if c.RestartCount > 0 || !c.NextRestartAt.IsZero() {
		rk = restartKey(c.RestartCount, c.Message, c.LastExit)
	}
	if mc.last[string(c.ID)] == state && mc.lastRestart[string(c.ID)] == rk {
		return
	}
	mc.lastRestart[string(c.ID)] = rk
	h := mc.health[string(c.ID)]
	mc.queueLocked(&pendingUpdate{TaskID: string(c.ID), State: state, Reason: c.Reason, Message: c.Message, ExitCode: c.ExitCode,
		RestartCount: c.RestartCount, LastExit: c.LastExit, Healthy: h.healthy, HealthOutput: h.output,
		IPs: c.IPs, PortMappings: c.Network.PortMappings})
}

// taskHealth is what a task's health check last said.
type taskHealth struct {
	healthy *bool
	output  string
}

// healthChanged sends a running task's change of health to the master
// (Mesos: an update with REASON_TASK_HEALTH_CHECK_STATUS_UPDATED on each
// change). A container still starting (in its grace period) has said
// nothing yet.
func (mc *masterClient) healthChanged(c containerizer.Container, s checks.Status) {
	if !isTask(c) || (s.State != checks.Healthy && s.State != checks.Unhealthy) {
		return
	}
	healthy := s.State == checks.Healthy
	msg := "health check passed"
	if !healthy {
		msg = "health check failed: " + s.Output
	}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	mc.health[string(c.ID)] = taskHealth{healthy: &healthy, output: s.Output}
	mc.queueLocked(&pendingUpdate{TaskID: string(c.ID), State: c.State, Reason: typesv1.Reason_REASON_TASK_HEALTH_CHECK_STATUS_UPDATED,
		Message: msg, Healthy: &healthy, HealthOutput: s.Output})
}

// reportedState is the state the master is told of a task's container. A
// restart is not the task starting over: Mesos has no in-place restart, and
// a master must not free the task's resources. While a restart waits, the
// task stays TASK_RUNNING; the message says it restarts, the reason is that
// of the exit (an OOM kill's memory reason, …).
func reportedState(c containerizer.Container) typesv1.TaskState {
	if !c.NextRestartAt.IsZero() && !c.State.Terminal() {
		return containerizer.TaskRunning
	}
	return c.State
}

// restartKey tells a task's restart updates apart: one when a restart
// waits (its message), one when it ran.
func restartKey(count int, message string, last *containerizer.ProcessExit) string {
	if count == 0 && last == nil {
		return ""
	}
	return fmt.Sprintf("%d %s", count, message)
}

// queueLocked checkpoints an update and wakes the sender.
func (mc *masterClient) queueLocked(u *pendingUpdate) {
	mc.nextSeq++
	u.Seq, u.Time = mc.nextSeq, time.Now().UTC()
	var b [16]byte
	crand.Read(b[:])
	u.UUID = hex.EncodeToString(b[:])
	// Durable before it is queued to be sent: an update the master may
	// have seen survives any crash, and is sent again until acknowledged.
	if err := mc.cp.write(mc.updatePath(u), u); err != nil {
		mc.log.Error("checkpointing a status update; it is sent but would not survive a restart", "task_id", u.TaskID, "err", err)
	}
	mc.last[u.TaskID] = u.State
	mc.pending = append(mc.pending, u)
	select {
	case mc.wake <- struct{}{}:
	default:
	}
}

// updatePath is an update's file: named by its sequence number, so that
// a directory listing is the order to send them in.
func (mc *masterClient) updatePath(u *pendingUpdate) string {
	return filepath.Join(mc.dir, fmt.Sprintf("%020d.json", u.Seq))
}

func (mc *masterClient) acked(uuid string) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	for i, u := range mc.pending {
		if u.UUID == uuid {
			os.Remove(mc.updatePath(u))
			mc.pending = append(mc.pending[:i], mc.pending[i+1:]...)
			return
		}
	}
}

// flush sends the updates this session has not sent, in order.
func (mc *masterClient) flush(s *masterSession) error {
	mc.mu.Lock()
	var todo []*pendingUpdate
	for _, u := range mc.pending {
		if u.sent != s {
			u.sent = s
			todo = append(todo, u)
		}
	}
	mc.mu.Unlock()
	for _, u := range todo {
		st := &masterv1.TaskStatus{TaskId: u.TaskID, State: u.State,
			Reason: u.Reason, Message: u.Message, ExitCode: u.ExitCode, Timestamp: timestamppb.New(u.Time),
			Healthy: u.Healthy, HealthOutput: u.HealthOutput,
			RestartCount: uint32(u.RestartCount), LastExit: exitToProto(u.LastExit),
			IpAddresses: u.IPs, PortMappings: mappingsToProto(u.PortMappings)}
		if err := s.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Update{Update: &masterv1.StatusUpdate{Uuid: u.UUID, Status: st}}}); err != nil {
			return err
		}
	}
	return nil
}

// run keeps the agent registered until ctx ends or the master refuses it
// for good.
func (mc *masterClient) run(ctx context.Context) {
	defer mc.tasks.Wait()
	masters, err := leaderconn.ParseList(mc.addr)
	if err == nil {
		mc.lc, err = leaderconn.New(leaderconn.Config{Masters: masters, Log: mc.log, DialOptions: []grpc.DialOption{
			grpc.WithTransportCredentials(mc.creds),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second})}})
	}
	if err != nil {
		mc.log.Error("master address", "master", mc.addr, "err", err)
		return
	}
	defer mc.lc.Close()
	client := masterv1.NewAgentGatewayClient(mc.lc)
	backoff := 100 * time.Millisecond
	everRegistered := false
	for ctx.Err() == nil {
		registered, err := mc.session(ctx, client)
		everRegistered = everRegistered || registered
		if ctx.Err() != nil {
			return
		}
		if isGone(err) {
			mc.log.Error("the master refused this agent: it was marked gone; killing its tasks and not registering again", "err", status.Convert(err).Message())
			mc.killTasks(ctx)
			mc.mu.Lock()
			mc.refused = status.Convert(err).Message()
			mc.mu.Unlock()
			return
		}
		if registered {
			backoff = 100 * time.Millisecond
		}
		if !mc.logLost(err, everRegistered, backoff) {
			backoff = 100 * time.Millisecond // a standby named the leader: register there now
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff + time.Duration(rand.Int64N(int64(backoff)/2+1))):
		}
		backoff = min(backoff*2, 10*time.Second)
	}
}

// logLost says why the agent registers again; false when a standby named
// the leader, which is tried at once.
func (mc *masterClient) logLost(err error, everRegistered bool, backoff time.Duration) bool {
	leader, notLeader := typesv1.LeaderHint(err)
	switch {
	case notLeader && leader != "":
		mc.log.Info("this master is a standby; registering with the leader it names", "leader", leader)
		return false
	case notLeader:
		mc.log.Info("no master leads at the moment (an election is under way); trying the next", "masters", mc.addr, "in", backoff)
	case typesv1.ErrorReason(err) == typesv1.ErrorReasonMasterStopping:
		mc.log.Info("the master is stopping; registering again with the next one", "masters", mc.addr, "in", backoff)
	case everRegistered:
		mc.log.Warn("master connection lost; registering again with the leader", "masters", mc.addr, "err", err, "in", backoff)
	default:
		mc.log.Info("the master does not answer yet; retrying", "masters", mc.addr, "err", err, "in", backoff)
	}
	return true
}

func isGone(err error) bool {
	return status.Code(err) == codes.FailedPrecondition && typesv1.ErrorReason(err) == typesv1.ErrorReasonAgentMarkedGone
}

// session registers and serves one stream; registered says whether the
// master accepted the agent.
func (mc *masterClient) session(ctx context.Context, client masterv1.AgentGatewayClient) (registered bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stream, err := client.Connect(ctx)
	if err != nil {
		return false, err
	}
	s := &masterSession{stream: stream}
	reg, err := mc.registration(ctx)
	if err != nil {
		return false, err
	}
	if err := s.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Register{Register: reg}}); err != nil {
		return false, recvErr(stream, err)
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	r := first.GetRegistered()
	if r == nil {
		return false, errors.New("the master did not answer register with registered")
	}
	if err := mc.saveID(r.GetAgentId()); err != nil {
		return false, err
	}
	interval := r.GetHeartbeatInterval().AsDuration()
	if interval <= 0 {
		interval = 5 * time.Second
	}
	mc.log.Info("registered with the master", "master", mc.lc.Leader(), "agent_id", r.GetAgentId(), "heartbeat_interval", interval)
	mc.mu.Lock()
	s.leader = mc.lc.Leader()
	mc.sess = s
	mc.mu.Unlock()
	defer func() {
		mc.mu.Lock()
		mc.sess = nil
		mc.mu.Unlock()
	}()

	heard := make(chan struct{}, 1)
	senderDone := make(chan struct{})
	defer func() { cancel(nil); <-senderDone }()
	go func() { // heartbeats and updates
		defer close(senderDone)
		t := time.NewTicker(interval)
		defer t.Stop()
		var seq uint64
		lastHeard := time.Now()
		for {
			if err := mc.flush(s); err != nil {
				cancel(err)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-mc.wake:
			case <-heard:
				lastHeard = time.Now()
			case <-t.C:
				// A master silent for three intervals is gone from this
				// side of the network: register again, maybe elsewhere.
				if time.Since(lastHeard) > 3*interval {
					mc.lc.Forget(s.leader) // paused or cut off: find the leader anew
					cancel(fmt.Errorf("the master sent nothing for %s", time.Since(lastHeard).Round(time.Second)))
					return
				}
				seq++
				if err := s.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Heartbeat{Heartbeat: &masterv1.Heartbeat{Seq: seq}}}); err != nil {
					cancel(err)
					return
				}
			}
		}
	}()
	for {
		msg, err := stream.Recv()
		if err != nil {
			if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
				return true, c
			}
			return true, err
		}
		select {
		case heard <- struct{}{}:
		default:
		}
		switch x := msg.Msg.(type) {
		case *masterv1.MasterMessage_Ack:
			mc.acked(x.Ack.GetUuid())
		case *masterv1.MasterMessage_Launch:
			mc.tasks.Go(func() { mc.launchTask(x.Launch.GetTask()) })
		case *masterv1.MasterMessage_Kill:
			mc.tasks.Go(func() { mc.killTask(x.Kill.GetTaskId(), x.Kill.GetGracePeriod()) })
		}
	}
}

func recvErr(stream grpc.BidiStreamingClient[masterv1.AgentMessage, masterv1.MasterMessage], err error) error {
	if _, rerr := stream.Recv(); rerr != nil {
		return rerr // the server's status says more than io.EOF
	}
	return err
}

func (mc *masterClient) saveID(id string) error {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if id == mc.agentID {
		return nil
	}
	if err := mc.cp.saveMasterMeta(masterMeta{AgentID: id, Master: mc.addr}); err != nil {
		return fmt.Errorf("keeping the agent ID the master assigned: %w", err)
	}
	mc.agentID = id
	mc.onID(id)
	return nil
}

// registration describes the agent and every task container it has.
func (mc *masterClient) registration(ctx context.Context) (*masterv1.Register, error) {
	cs, err := mc.adm.cz.Containers(ctx)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	total := mc.adm.ledger.capacity()
	reg := &masterv1.Register{Hostname: host, Address: mc.node.Address, Version: version.Version, Attributes: mc.node.Attributes,
		Resources: &masterv1.Resources{Cpus: total.CPUs, MemoryBytes: total.Memory, DiskBytes: total.Disk, Ports: portsToProto(total.Ports)}}
	mc.mu.Lock()
	reg.AgentId = mc.agentID
	mc.mu.Unlock()
	for _, c := range cs {
		if c.Labels[LabelTask] == "" {
			continue
		}
		mc.mu.Lock()
		h := mc.health[string(c.ID)]
		mc.mu.Unlock()
		reg.Tasks = append(reg.Tasks, &masterv1.TaskStatus{TaskId: string(c.ID),
			State: reportedState(c), Reason: c.Reason,
			Message: c.Message, ExitCode: c.ExitCode, Healthy: h.healthy, HealthOutput: h.output,
			RestartCount: uint32(c.RestartCount), LastExit: exitToProto(c.LastExit),
			IpAddresses: c.IPs, PortMappings: mappingsToProto(c.Network.PortMappings)})
	}
	return reg, nil
}

// isTask says whether a container is the master's task of that ID: the
// agent acts, for the master, only on containers so labelled. A container
// someone launched through the Agent API under the same name is not the
// task's, whatever its ID.
func isTask(c containerizer.Container) bool { return c.Labels[LabelTask] != "" }

// launchTask runs a task from the master as a container with the task's
// ID. A launch that fails before the task's container exists is reported
// as TASK_FAILED here; otherwise the container's own states are the
// updates.
func (mc *masterClient) launchTask(t *masterv1.Task) {
	ctx, cancel := context.WithTimeout(mc.gate.streamsCtx, 10*time.Minute)
	defer cancel()
	l := mc.startLaunching(t.GetId(), cancel)
	defer mc.endLaunching(t.GetId(), l)
	cfg := taskLaunch(t)
	cfg.PullProgress = mc.pullProgress(t.GetId())
	// Checked as LaunchContainer checks it: a master of another version
	// may not have.
	err := launchspec.Validate(t.GetContainer())
	if t.GetContainer() == nil {
		err = nil
	}
	if err == nil {
		_, err = mc.adm.launchChecked(ctx, cfg, t.GetContainer())
	}
	if err == nil {
		mc.log.Info("task launched", "task_id", t.GetId(), "image", cfg.Image)
		return
	}
	mc.mu.Lock()
	killed := l.killed
	mc.mu.Unlock()
	if killed {
		mc.log.Info("task launch ended by a kill", "task_id", t.GetId(), "err", err)
		return // killTask reports it
	}
	c, gerr := mc.adm.cz.Get(ctx, cfg.ID)
	u := afterFailedLaunch(t.GetId(), err, c, gerr)
	if gerr == nil && isTask(c) {
		mc.log.Info("task launch ended with an error; its container reports its state", "task_id", t.GetId(), "state", c.State, "err", err)
	} else {
		mc.log.Warn("task launch failed", "task_id", t.GetId(), "err", u.Message)
	}
	if u != nil {
		mc.mu.Lock()
		mc.queueLocked(u)
		mc.mu.Unlock()
	}
}

func (mc *masterClient) startLaunching(id string, cancel context.CancelFunc) *taskLaunching {
	l := &taskLaunching{cancel: cancel, done: make(chan struct{})}
	mc.mu.Lock()
	defer mc.mu.Unlock()
	if mc.launching == nil {
		mc.launching = map[string]*taskLaunching{}
	}
	if mc.launching[id] == nil { // a launch sent twice: the first one is the one a kill ends
		mc.launching[id] = l
	}
	return l
}

func (mc *masterClient) endLaunching(id string, l *taskLaunching) {
	mc.mu.Lock()
	if mc.launching[id] == l {
		delete(mc.launching, id)
	}
	mc.mu.Unlock()
	close(l.done)
}

// stopLaunching ends a launch of task id under way (waiting for its
// image, say) and waits until it has returned, so that the kill that
// follows finds its container if the launch made one.
func (mc *masterClient) stopLaunching(ctx context.Context, id string) {
	mc.mu.Lock()
	l := mc.launching[id]
	if l != nil {
		l.killed = true
		l.cancel()
	}
	mc.mu.Unlock()
	if l != nil {
		select {
		case <-l.done:
		case <-ctx.Done():
		}
	}
}

// taskLaunch is the container a task runs: its whole container spec when
// the master sent one (older masters send image, command and resources
// only), under the task's ID and labelled as the master's task.
func taskLaunch(t *masterv1.Task) containerizer.LaunchConfig {
	var cfg containerizer.LaunchConfig
	if spec := t.GetContainer(); spec != nil {
		cfg = launchFromProto(spec)
	} else {
		cfg = containerizer.LaunchConfig{
			Image:     t.GetImage(),
			Resources: isolators.Resources{CPUs: t.GetResources().GetCpus(), Memory: t.GetResources().GetMemoryBytes()},
		}
		if len(t.GetCommand()) > 0 {
			cfg.Cmd = t.GetCommand()
		}
	}
	cfg.ID = containerizer.ContainerID(t.GetId())
	labels := make(map[string]string, len(cfg.Labels)+1)
	for k, v := range cfg.Labels {
		labels[k] = v
	}
	labels[LabelTask] = "true"
	cfg.Labels = labels
	return cfg
}

// pullProgressEvery bounds how often a pull's progress becomes a
// TASK_STAGING update: each is checkpointed and sent to the master.
const pullProgressEvery = time.Second

// pullProgress reports a task's pull as TASK_STAGING updates whose
// message says how much is fetched.
func (mc *masterClient) pullProgress(id string) func(containerizer.PullProgress) {
	var (
		mu     sync.Mutex
		layers = map[string]containerizer.PullProgress{}
		last   time.Time
	)
	return func(p containerizer.PullProgress) {
		mu.Lock()
		defer mu.Unlock()
		layers[p.Digest] = p
		if time.Since(last) < pullProgressEvery {
			return
		}
		last = time.Now()
		var done, total int64
		for _, l := range layers {
			done, total = done+l.Offset, total+l.Total
		}
		msg := fmt.Sprintf("pulling the image: %s of %s in %d layers", units.Human(done), units.Human(total), len(layers))
		mc.mu.Lock()
		defer mc.mu.Unlock()
		if st, ok := mc.last[id]; ok && st != typesv1.TaskState_TASK_STAGING {
			return // the container reports for itself now
		}
		mc.queueLocked(&pendingUpdate{TaskID: id, State: typesv1.TaskState_TASK_STAGING, Message: msg})
	}
}

// afterFailedLaunch is the update a failed launch of task id owes the
// master, given what Get then found under that ID (c, or gerr); nil when
// the task's container reports for itself.
func afterFailedLaunch(id string, err error, c containerizer.Container, gerr error) *pendingUpdate {
	switch {
	case gerr == nil && isTask(c):
		// The task's container exists (a launch sent twice, or one that
		// failed after creating it): its state is the truth, and its
		// changes are reported. One that has ended changes no more: say
		// its end again, or a master that launched the ID again waits on
		// an update that was sent once, before.
		if !c.State.Terminal() {
			return nil
		}
		return &pendingUpdate{TaskID: id, State: c.State, Reason: c.Reason, Message: c.Message, ExitCode: c.ExitCode}
	case gerr == nil:
		err = fmt.Errorf("a container named %s already exists on this agent and is not this task's (it was started through the Agent API, e.g. gearbox run --name %s); "+
			"it was left alone: launch the task under another ID, or remove that container (gearbox rm -f %s) and launch again", id, id, id)
	}
	reason := containerizer.ReasonContainerLaunchFailed
	var pe *containerizer.PullError
	if errors.As(err, &pe) {
		reason = pe.Reason
	}
	return &pendingUpdate{TaskID: id, State: containerizer.TaskFailed, Reason: reason, Message: err.Error()}
}

// killTask kills the task's container, and only a task's: a container of
// the same ID that is not labelled as a task is left alone. Without a
// grace period named (nil) the task's kill policy applies.
func (mc *masterClient) killTask(id string, named *durationpb.Duration) {
	grace := named.AsDuration()
	ctx, cancel := context.WithTimeout(mc.gate.streamsCtx, time.Minute+grace)
	defer cancel()
	mc.stopLaunching(ctx, id)
	c, err := mc.adm.cz.Get(ctx, containerizer.ContainerID(id))
	if err == nil && !isTask(c) {
		mc.log.Warn("the master asked to kill a task whose ID names a container that is not a task's; left it alone", "task_id", id)
		mc.mu.Lock()
		defer mc.mu.Unlock()
		if st, ok := mc.last[id]; ok && st.Terminal() {
			return // its end (the failed launch) was reported already
		}
		mc.queueLocked(&pendingUpdate{TaskID: id, State: containerizer.TaskKilled, Reason: containerizer.ReasonTaskKilled,
			Message: fmt.Sprintf("the task had no container on this agent; container %s there is not the task's and was left alone", id)})
		return
	}
	req := containerizer.KillRequest{} // the kill policy
	switch {
	case named != nil && grace > 0:
		req = containerizer.KillRequest{Signal: syscall.SIGTERM, Grace: grace}
	case named != nil:
		req = containerizer.KillRequest{Signal: syscall.SIGKILL}
	}
	if err == nil {
		err = mc.adm.cz.Kill(ctx, containerizer.ContainerID(id), req)
	}
	switch {
	case err == nil:
		mc.log.Info("task killed at the master's request", "task_id", id)
	case errdefs.IsNotFound(err):
		// Never launched here (or removed): say so, or the master waits.
		mc.mu.Lock()
		mc.queueLocked(&pendingUpdate{TaskID: id, State: containerizer.TaskKilled, Reason: containerizer.ReasonTaskKilled,
			Message: "killed before its container existed on agent"})
		mc.mu.Unlock()
	default:
		mc.log.Info("killing a task", "task_id", id, "err", err)
	}
}

// killTasks kills every task container: the master marked this agent gone.
func (mc *masterClient) killTasks(ctx context.Context) {
	cs, err := mc.adm.cz.Containers(ctx)
	if err != nil {
		mc.log.Error("listing containers to kill", "err", err)
		return
	}
	for _, c := range cs {
		if isTask(c) && !c.State.Terminal() {
			if err := mc.adm.cz.Kill(ctx, c.ID, containerizer.KillRequest{Signal: syscall.SIGKILL}); err != nil {
				mc.log.Warn("killing a task of an agent marked gone", "task_id", c.ID, "err", err)
			}
		}
	}
}

// pendingCount is the number of updates not yet acknowledged.
func (mc *masterClient) pendingCount() int {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	return len(mc.pending)
}

// state fills the master's part of GetState.
func (mc *masterClient) state(r *agentv1.GetStateResponse) {
	mc.mu.Lock()
	defer mc.mu.Unlock()
	r.Master, r.MasterConnected, r.MasterRefused, r.PendingStatusUpdates = mc.addr, mc.sess != nil, mc.refused, int32(len(mc.pending))
	if mc.sess != nil && mc.sess.leader != "" {
		r.Master = mc.sess.leader // the one of the list it is registered with
	}
}

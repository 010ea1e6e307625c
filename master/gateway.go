package master

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

type gateway struct {
	masterv1.UnimplementedAgentGatewayServer
	m *Master
}

// agentConn is an agent's stream: messages to the agent queue here and one
// goroutine sends them.
type agentConn struct {
	out    chan *masterv1.MasterMessage
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	reason error
}

// newAgentConn makes room for the commands a registration may queue at
// once (one kill per reported task at most) on top of the usual 256.
func newAgentConn(tasks int) *agentConn {
	return &agentConn{out: make(chan *masterv1.MasterMessage, 256+tasks), done: make(chan struct{})}
}

// sendWait queues an answer to the agent (an ack), waiting while the queue
// is full: an agent that does not read its stream stops being read.
func (c *agentConn) sendWait(msg *masterv1.MasterMessage) {
	select {
	case c.out <- msg:
	case <-c.done:
	}
}

// send queues a command (launch, kill) without waiting, under the
// master's lock; an agent whose queue is full is disconnected rather than
// let the master wait on it, and gets its commands again when it
// registers (reconciliation).
func (c *agentConn) send(msg *masterv1.MasterMessage) {
	select {
	case c.out <- msg:
	case <-c.done:
	default:
		c.close(status.Error(codes.Unavailable, "the agent does not read its stream: reconnect"))
	}
}

func (c *agentConn) close(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.reason = err
		c.mu.Unlock()
		close(c.done)
	})
}

func (c *agentConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

func errAborted(format string, a ...any) error {
	return status.Errorf(codes.Aborted, format, a...)
}

func errGone(a *agentEntry) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf(
		"agent %s was marked gone by an operator: it may not register again and must kill its tasks; "+
			"to bring this host back as a new agent, stop the agent and remove its work dir's meta/master.json", a.ID))
	return typesv1.WithErrorReason(st, typesv1.ErrorReasonAgentMarkedGone).Err()
}

func newAgentID() string {
	var b [8]byte
	rand.Read(b[:])
	return "agent-" + hex.EncodeToString(b[:])
}

func (m *Master) checkRegister(r *masterv1.Register) error {
	if r == nil {
		return status.Error(codes.InvalidArgument, "the first message on Connect must be register")
	}
	if r.GetAgentId() != "" {
		if err := ids.Validate(r.GetAgentId()); err != nil {
			return status.Errorf(codes.InvalidArgument, "agent ID: %v", err)
		}
	}
	if r.GetHostname() == "" {
		return status.Error(codes.InvalidArgument, "register: hostname is empty")
	}
	if err := checkResources(r.GetResources()); err != nil {
		return err
	}
	c := m.cfg
	res := r.GetResources()
	switch {
	case res.GetCpus() > c.MaxAgentCPUs:
		return status.Errorf(codes.InvalidArgument, "register: %g cpus is more than an agent may offer (--max-agent-cpus %g)", res.GetCpus(), c.MaxAgentCPUs)
	case res.GetMemoryBytes() > int64(c.MaxAgentMemory):
		return status.Errorf(codes.InvalidArgument, "register: %s of memory is more than an agent may offer (--max-agent-memory %s)", units.FormatSize(res.GetMemoryBytes()), c.MaxAgentMemory)
	case res.GetDiskBytes() > int64(c.MaxAgentDisk):
		return status.Errorf(codes.InvalidArgument, "register: %s of disk is more than an agent may offer (--max-agent-disk %s)", units.FormatSize(res.GetDiskBytes()), c.MaxAgentDisk)
	case len(r.GetTasks()) > c.MaxAgentTasks:
		return status.Errorf(codes.InvalidArgument, "register: %d tasks reported; an agent may have at most %d (--max-agent-tasks)", len(r.GetTasks()), c.MaxAgentTasks)
	}
	for _, t := range r.GetTasks() {
		if err := checkTaskID(t.GetTaskId()); err != nil {
			return err
		}
	}
	return nil
}

func checkResources(r *masterv1.Resources) error {
	c := r.GetCpus()
	if c < 0 || math.IsNaN(c) || math.IsInf(c, 0) || r.GetMemoryBytes() < 0 || r.GetDiskBytes() < 0 {
		return status.Errorf(codes.InvalidArgument, "resources cpus=%g memory=%d disk=%d: give non-negative finite values", c, r.GetMemoryBytes(), r.GetDiskBytes())
	}
	return checkPortRanges(r.GetPorts())
}

func (g *gateway) Connect(stream grpc.BidiStreamingServer[masterv1.AgentMessage, masterv1.MasterMessage]) error {
	m := g.m
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	reg := first.GetRegister()
	if err := m.checkRegister(reg); err != nil {
		return err
	}
	c := newAgentConn(len(reg.GetTasks()))
	cn, _ := identity(stream.Context())
	a, err := m.register(reg, cn, c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(stream.Context())
	as := &agentStream{m: m, a: a, c: c, stream: stream, acks: make(chan pendingAck, 64)}
	// A Send to an agent that does not read its stream blocks until the
	// stream ends, and a Recv until the agent sends: gRPC ends the stream
	// only once Connect has returned. So Connect cannot wait for these
	// two; m.streamLoops holds them and Run waits for it. Connect waits for
	// the ack loop, which the cancel below ends.
	sendErr := make(chan error, 1)
	m.streamLoops.Go(func() { sendErr <- as.sendLoop(ctx) })
	recvErr := make(chan error, 1)
	m.streamLoops.Go(func() {
		if err := as.recvLoop(); err != nil {
			recvErr <- err
		}
	})
	var acks sync.WaitGroup
	acks.Go(func() { as.ackLoop(ctx) })
	defer func() { cancel(); acks.Wait() }()
	var result error
	select {
	case err := <-recvErr:
		c.close(nil)
		result = err
		if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
			result = nil
		}
	case <-c.done:
		result = c.err()
	case err := <-sendErr:
		result = err
	}
	c.close(nil)
	m.mu.Lock()
	if a.conn == c {
		a.conn = nil
	}
	m.mu.Unlock()
	if result != nil && status.Code(result) != codes.Unknown {
		m.log.Info("agent stream ended", "agent_id", a.ID, "why", result)
	}
	return result
}

// agentStream is one agent's Connect stream after it registered: sendLoop
// writes what the master sends the agent, recvLoop applies what the agent
// sends, ackLoop acknowledges status updates once they are durable.
type agentStream struct {
	m      *Master
	a      *agentEntry
	c      *agentConn
	stream grpc.BidiStreamingServer[masterv1.AgentMessage, masterv1.MasterMessage]
	acks   chan pendingAck
}

// sendLoop returns the error of a failed send, or nil once the connection
// or the stream ends.
func (as *agentStream) sendLoop(ctx context.Context) error {
	for {
		select {
		case msg := <-as.c.out:
			if err := as.stream.Send(msg); err != nil {
				return err
			}
		case <-as.c.done:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (as *agentStream) ackLoop(ctx context.Context) {
	for {
		select {
		case p := <-as.acks:
			if p.gen > 0 && as.m.p.wait(ctx, p.gen) != nil {
				continue // not durable: not acknowledged; the agent resends it
			}
			as.c.sendWait(&masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Ack{Ack: p.ack}})
		case <-as.c.done:
			return
		}
	}
}

// recvLoop returns why the agent's side ended, or nil once the connection
// ends.
func (as *agentStream) recvLoop() error {
	m, a, c := as.m, as.a, as.c
	for {
		msg, err := as.stream.Recv()
		if err != nil {
			return err
		}
		switch x := msg.Msg.(type) {
		case *masterv1.AgentMessage_Heartbeat:
			a.lastBeat.Store(time.Now().UnixNano())
			c.sendWait(&masterv1.MasterMessage{Msg: &masterv1.MasterMessage_HeartbeatAck{HeartbeatAck: &masterv1.HeartbeatAck{Seq: x.Heartbeat.GetSeq()}}})
		case *masterv1.AgentMessage_Update:
			a.lastBeat.Store(time.Now().UnixNano())
			ack, g, err := m.statusUpdate(a, c, x.Update)
			if err != nil {
				return err
			}
			// Applied in order here; acknowledged in order once durable,
			// without holding up the next update.
			select {
			case as.acks <- pendingAck{ack, g}:
			case <-c.done:
				return nil
			}
		default:
			return status.Error(codes.InvalidArgument, "after register, send heartbeats and status updates only")
		}
	}
}

// register admits an agent (new, returning, or reconnecting) and
// reconciles its tasks: the agent's report is the truth for tasks both
// know; tasks the master ended without it (dropped, gone, killed) are
// killed there; tasks it no longer has are lost.
func (m *Master) register(reg *masterv1.Register, cn string, c *agentConn) (*agentEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := time.Now()
	id, err := m.agentIDFor(reg.GetAgentId(), cn)
	if err != nil {
		return nil, err
	}
	a := m.agents[id]
	if a == nil || a.State == store.AgentGone {
		if err := m.checkIdentityBound(id, cn); err != nil {
			return nil, err
		}
	}
	switch {
	case a != nil && a.GoneByOperator:
		m.log.Warn("refused an agent marked gone", "agent_id", id, "hostname", reg.GetHostname())
		return nil, errGone(a)
	case a != nil && a.Identity != "" && a.Identity != cn:
		m.log.Warn("refused an agent ID presented by another certificate", "agent_id", id, "registered_by", a.Identity, "presented_by", cn)
		return nil, status.Errorf(codes.PermissionDenied, "agent ID %s registered with certificate %q; this one is %q: an agent keeps its certificate's name", id, a.Identity, cn)
	}
	added := a == nil || a.State != store.AgentActive
	if a == nil {
		a = &agentEntry{Agent: store.Agent{ID: id, RegisteredAt: now.UTC()}}
		m.agents[id] = a
	}
	if a.conn != nil {
		a.conn.close(status.Error(codes.Aborted, "replaced by a newer connection of the same agent"))
	}
	a.conn = c
	if a.Identity == "" {
		a.Identity = cn
	}
	a.lastBeat.Store(now.UnixNano())
	a.Hostname, a.Address, a.Version = reg.GetHostname(), reg.GetAddress(), reg.GetVersion()
	a.Resources, a.Attributes = resFromProto(reg.GetResources()), reg.GetAttributes()
	a.State, a.UnreachableAt = store.AgentActive, time.Time{}
	m.p.markAgent(id)
	c.send(&masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Registered{Registered: &masterv1.Registered{
		AgentId: id, HeartbeatInterval: durationpb.New(m.cfg.AgentPingTimeout)}}})

	reported := map[string]*masterv1.TaskStatus{}
	for _, ts := range reg.GetTasks() {
		reported[ts.GetTaskId()] = ts
	}
	for _, t := range m.agentTasks(id) {
		rep, ok := reported[t.ID]
		delete(reported, t.ID)
		switch {
		case ok && terminal(t.State) && !terminal(rep.GetState()):
			// Ended here while the agent was away (dropped, gone): it must
			// not run on.
			m.log.Info("killing a task the master had ended", "task_id", t.ID, "agent_id", id, "state", t.State)
			c.send(killMsg(t.ID, 0))
		case ok:
			setNetwork(t, rep)
			m.setTaskStatus(t, rep.GetState(), rep.GetReason(), rep.GetMessage(), rep.ExitCode, setHealth(t, rep))
			if t.KillRequested && !terminal(t.State) {
				c.send(killMsg(t.ID, 0))
			}
		case t.Adopted:
			// Never the master's: forgotten once its agent no longer has
			// it, so that reports cannot grow the registry without bound.
			if !terminal(t.State) {
				m.setTask(t, typesv1.TaskState_TASK_GONE, typesv1.Reason_REASON_CONTAINER_VANISHED, fmt.Sprintf("agent %s registered again without this adopted task; the registry forgets it", id), nil)
			}
			m.forgetTask(t)
		case terminal(t.State):
		case t.State == typesv1.TaskState_TASK_STAGING:
			m.setTask(t, typesv1.TaskState_TASK_DROPPED, typesv1.Reason_REASON_AGENT_RESTARTED, fmt.Sprintf("agent %s registered again without this task: its launch never reached the agent", id), nil)
		case t.PartitionAware:
			m.setTask(t, typesv1.TaskState_TASK_GONE, typesv1.Reason_REASON_CONTAINER_VANISHED, fmt.Sprintf("agent %s registered again without this task", id), nil)
		default:
			m.setTask(t, typesv1.TaskState_TASK_LOST, typesv1.Reason_REASON_CONTAINER_VANISHED, fmt.Sprintf("agent %s registered again without this task", id), nil)
		}
	}
	m.adopt(id, reported, c, now)
	if added {
		m.ev.publish(&masterv1.Event{Type: masterv1.Event_AGENT_ADDED, Agent: m.agentToProto(a)})
	}
	m.syncAgent(a)
	m.log.Info("agent registered", "agent_id", id, "hostname", a.Hostname, "tasks", len(reg.GetTasks()), "returning", reg.GetAgentId() != "")
	return a, nil
}

// adopt takes on the tasks an agent reported that the master does not
// know (up to --max-agent-tasks), and kills there those the master placed
// on another agent. Callers hold m.mu.
func (m *Master) adopt(id string, reported map[string]*masterv1.TaskStatus, c *agentConn, now time.Time) {
	adopted := 0
	for _, t := range m.agentTasks(id) {
		if t.Adopted {
			adopted++
		}
	}
	for _, tid := range sortedKeys(reported) {
		rep := reported[tid]
		if terminal(rep.GetState()) {
			continue // ended, and never the master's: nothing to manage
		}
		if other, ok := m.tasks[tid]; ok {
			// Known on another agent: not this one's to adopt.
			m.log.Warn("agent reports a task the master placed on another agent; killing it there", "task_id", tid, "agent_id", id, "owner", other.AgentID)
			c.send(killMsg(tid, 0))
			continue
		}
		if adopted >= m.cfg.MaxAgentTasks {
			m.log.Warn("not adopting a task: the agent has as many adopted tasks as --max-agent-tasks allows", "task_id", tid, "agent_id", id)
			continue
		}
		adopted++
		t := &store.Task{ID: tid, AgentID: id, PartitionAware: true, CreatedAt: now.UTC(), Adopted: true,
			State: rep.GetState(), Reason: rep.GetReason(), ExitCode: rep.ExitCode,
			Message: rep.GetMessage()}
		m.tasks[tid] = t
		m.index(t)
		if err := m.claim(t); err != nil {
			m.log.Warn("an adopted task's resources are not free on its agent", "task_id", tid, "agent_id", id, "err", err)
		}
		m.p.markTask(tid)
		m.ev.publish(&masterv1.Event{Type: masterv1.Event_TASK_ADDED, Task: taskToProto(t)})
		m.log.Warn("adopted a task the registry did not know", "task_id", tid, "agent_id", id)
	}
}

// agentIDFor is the ID a registration gets: the one it presents, or for a
// new agent a pinned one of its certificate name (--agent-identity), else
// a new one. Pinned IDs belong to their name alone. Callers hold m.mu.
func (m *Master) agentIDFor(presented, cn string) (string, error) {
	mine := m.pinnedTo[cn]
	if presented != "" {
		if owner, ok := m.pins[presented]; ok && owner != cn {
			return "", status.Errorf(codes.PermissionDenied, "agent ID %s is pinned to certificate %q (--agent-identity); this one is %q", presented, owner, cn)
		}
		if len(mine) > 0 && m.pins[presented] != cn {
			return "", status.Errorf(codes.PermissionDenied, "certificate %q may register only as its pinned agent IDs %v (--agent-identity), not %s", cn, mine, presented)
		}
		return presented, nil
	}
	if len(mine) == 0 {
		return newAgentID(), nil
	}
	for _, id := range mine {
		if a := m.agents[id]; a == nil || (a.conn == nil && !a.GoneByOperator) {
			return id, nil
		}
	}
	return "", status.Errorf(codes.ResourceExhausted, "every agent ID pinned to certificate %q (%v) is connected: register with one of them, or pin another (--agent-identity ID=%s)", cn, mine, cn)
}

// checkIdentityBound refuses a registration that would give a certificate
// name more live (not gone) agents than --max-agents-per-identity. Names
// with pinned IDs are bounded by their pins; clients without a
// certificate (the unix socket's root, --insecure) are not bounded here.
// Callers hold m.mu.
func (m *Master) checkIdentityBound(id, cn string) error {
	if cn == "" || len(m.pinnedTo[cn]) > 0 {
		return nil
	}
	var live []string
	for _, a := range m.agents {
		if a.ID != id && a.Identity == cn && a.State != store.AgentGone {
			live = append(live, a.ID)
		}
	}
	if len(live) >= m.cfg.MaxAgentsPerIdentity {
		sort.Strings(live)
		return status.Errorf(codes.ResourceExhausted, "certificate %q already holds %d agent(s) (%s), as many as --max-agents-per-identity %d allows: "+
			"register with that agent's ID (its work_dir/meta/master.json keeps it), mark the old one gone (gearbox agent mark-gone ID), or raise the limit",
			cn, len(live), strings.Join(live, ", "), m.cfg.MaxAgentsPerIdentity)
	}
	return nil
}

// forgetTask removes a task from the registry. Callers hold m.mu.
func (m *Master) forgetTask(t *store.Task) {
	delete(m.tasks, t.ID)
	if set := m.byAgent[t.AgentID]; set != nil {
		delete(set, t.ID)
	}
	m.p.markTask(t.ID)
}

func sortedKeys[V any](mp map[string]V) []string {
	out := make([]string, 0, len(mp))
	for k := range mp {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// rank orders a task's states as an agent reports them; states the
// master sets while it cannot hear the agent rank lowest, so that any
// report replaces them.
func rank(state typesv1.TaskState) int {
	switch state {
	case typesv1.TaskState_TASK_UNREACHABLE, typesv1.TaskState_TASK_LOST:
		return -1
	case typesv1.TaskState_TASK_STAGING:
		return 0
	case typesv1.TaskState_TASK_STARTING:
		return 1
	case typesv1.TaskState_TASK_RUNNING:
		return 2
	}
	return 3
}

// killMsgNamed kills with the grace period an operator named; nil: the
// task's kill policy.
func killMsgNamed(taskID string, grace *durationpb.Duration) *masterv1.MasterMessage {
	return &masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Kill{Kill: &masterv1.KillTask{TaskId: taskID, GracePeriod: grace}}}
}

func killMsg(taskID string, grace time.Duration) *masterv1.MasterMessage {
	k := &masterv1.KillTask{TaskId: taskID}
	if grace > 0 {
		k.GracePeriod = durationpb.New(grace)
	}
	return &masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Kill{Kill: k}}
}

type pendingAck struct {
	ack *masterv1.StatusUpdateAck
	gen uint64 // the registry generation that must be durable first; 0: none
}

// statusUpdate applies an agent's status update and returns the ack to
// send once generation gen is durable. Updates for tasks the master ended
// meanwhile are acknowledged and ignored (the task is killed if it still
// runs).
func (m *Master) statusUpdate(a *agentEntry, c *agentConn, u *masterv1.StatusUpdate) (*masterv1.StatusUpdateAck, uint64, error) {
	st := u.GetStatus()
	if u.GetUuid() == "" || st == nil {
		return nil, 0, status.Error(codes.InvalidArgument, "a status update needs a uuid and a status")
	}
	if err := checkTaskID(st.GetTaskId()); err != nil {
		return nil, 0, err
	}
	if st.GetState() == typesv1.TaskState_TASK_STATE_UNSPECIFIED {
		return nil, 0, status.Errorf(codes.InvalidArgument, "status update %s for task %s has no state", u.GetUuid(), st.GetTaskId())
	}
	m.mu.Lock()
	t, ok := m.tasks[st.GetTaskId()]
	var g uint64
	switch {
	case !ok || t.AgentID != a.ID:
		m.log.Warn("status update for a task the master did not place on this agent; acknowledged and ignored", "task_id", st.GetTaskId(), "agent_id", a.ID)
	case terminal(t.State):
		if !terminal(st.GetState()) {
			c.send(killMsg(t.ID, 0))
		}
	case rank(st.GetState()) < rank(t.State):
		// An update the agent queued before the state its registration
		// already reported: old news.
	default:
		setNetwork(t, st)
		t.RestartCount, t.LastExit = int(st.GetRestartCount()), exitFromProto(st.GetLastExit())
		g = m.setTaskStatus(t, st.GetState(), st.GetReason(), st.GetMessage(), st.ExitCode, setHealth(t, st))
	}
	m.mu.Unlock()
	return &masterv1.StatusUpdateAck{Uuid: u.GetUuid(), TaskId: st.GetTaskId()}, g, nil
}

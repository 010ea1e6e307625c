package master

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// These tests run the real master and speak its gRPC API over loopback;
// the agents are simulated (tests with real agents are in integration/).

func startMaster(t *testing.T, mod func(*Config)) (*Master, masterv1.OperatorClient, *grpc.ClientConn) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen, cfg.WorkDir = "127.0.0.1:0", t.TempDir()
	// Local clients use the unix socket (plaintext TCP is refused); a
	// short path, as a socket's must be under 108 bytes.
	sdir, err := os.MkdirTemp("", "gm")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sdir) })
	cfg.Socket = filepath.Join(sdir, "master.sock")
	// Missed after 1.5 s without a heartbeat; the fake agents beat every
	// 50 ms, so only a stall of 1.5 s (not a busy -race run) misses one.
	cfg.AgentPingTimeout, cfg.MaxAgentPingTimeouts = 500*time.Millisecond, 3
	if mod != nil {
		mod(&cfg)
	}
	m := runMaster(t, cfg)
	conn, err := grpc.NewClient(m.SocketAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return m, masterv1.NewOperatorClient(conn), conn
}

// runMaster runs a master of cfg until the test ends (or stopMaster), and
// waits until it serves.
func runMaster(t *testing.T, cfg Config) *Master {
	t.Helper()
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("master: %v", err)
			}
		})
	}
	stops.Store(m, stop)
	t.Cleanup(stop)
	select {
	case <-m.Ready():
	case err := <-done:
		t.Fatalf("master: %v", err)
	}
	return m
}

// stops holds each test master's stop function.
var stops sync.Map

func stopMaster(m *Master) {
	if f, ok := stops.Load(m); ok {
		f.(func())()
	}
}

// fakeAgent speaks the agent's side of Connect.
type fakeAgent struct {
	id     string
	stream grpc.BidiStreamingClient[masterv1.AgentMessage, masterv1.MasterMessage]
	cancel context.CancelFunc
	msgs   chan *masterv1.MasterMessage
	mu     sync.Mutex
	silent bool
	end    chan error
}

func connectAgent(t *testing.T, conn *grpc.ClientConn, reg *masterv1.Register) (*fakeAgent, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	st, err := masterv1.NewAgentGatewayClient(conn).Connect(ctx)
	if err != nil {
		cancel()
		return nil, err
	}
	if reg.Hostname == "" {
		reg.Hostname = "fake"
	}
	if reg.Resources == nil {
		reg.Resources = &masterv1.Resources{Cpus: 2, MemoryBytes: 1 << 30}
	}
	st.Send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Register{Register: reg}})
	first, err := st.Recv()
	if err != nil {
		cancel()
		return nil, err
	}
	a := &fakeAgent{id: first.GetRegistered().GetAgentId(), stream: st, cancel: cancel, msgs: make(chan *masterv1.MasterMessage, 100), end: make(chan error, 1)}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				a.end <- err
				close(a.msgs)
				return
			}
			if m.GetHeartbeatAck() == nil {
				a.msgs <- m
			}
		}
	}()
	go func() {
		tk := time.NewTicker(50 * time.Millisecond)
		defer tk.Stop()
		for range tk.C {
			a.mu.Lock()
			silent := a.silent
			a.mu.Unlock()
			if ctx.Err() != nil {
				return
			}
			if !silent {
				a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Heartbeat{Heartbeat: &masterv1.Heartbeat{}}})
			}
		}
	}()
	t.Cleanup(cancel)
	return a, nil
}

func (a *fakeAgent) send(m *masterv1.AgentMessage) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stream.Send(m)
}

func (a *fakeAgent) silence() { a.mu.Lock(); a.silent = true; a.mu.Unlock() }

func (a *fakeAgent) update(uuid, task string, state typesv1.TaskState) {
	a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Update{Update: &masterv1.StatusUpdate{Uuid: uuid,
		Status: &masterv1.TaskStatus{TaskId: task, State: state}}}})
}

func (a *fakeAgent) next(t *testing.T) *masterv1.MasterMessage {
	t.Helper()
	select {
	case m, ok := <-a.msgs:
		if !ok {
			t.Fatalf("agent stream ended: %v", <-a.end)
		}
		return m
	case <-time.After(30 * time.Second):
		t.Fatal("no message from the master within 30s")
	}
	return nil
}

func waitTask(t *testing.T, c masterv1.OperatorClient, id string, want typesv1.TaskState) *masterv1.Task {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := c.ReconcileTasks(context.Background(), &masterv1.ReconcileTasksRequest{TaskIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Tasks[0].State == want {
			return r.Tasks[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %s, want %s", id, r.Tasks[0].State, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLaunchUpdatesAndPartition(t *testing.T) {
	_, c, conn := startMaster(t, nil)
	ctx := context.Background()
	a, err := connectAgent(t, conn, &masterv1.Register{Attributes: map[string]string{"rack": "r1"}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(a.id, "agent-") {
		t.Fatalf("assigned agent ID %q", a.id)
	}
	for _, id := range []string{"pa", "notpa", "staged"} {
		pa := id != "notpa"
		if _, err := c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: id, Image: "busybox", Constraints: []string{"rack:r1"},
			Resources: &masterv1.Resources{Cpus: 0.5}, PartitionAware: &pa}); err != nil {
			t.Fatal(err)
		}
		if l := a.next(t).GetLaunch(); l.GetTask().GetId() != id {
			t.Fatalf("agent got %v, want the launch of %s", l, id)
		}
	}
	a.update("u1", "pa", typesv1.TaskState_TASK_RUNNING)
	a.update("u2", "notpa", typesv1.TaskState_TASK_RUNNING)
	for _, u := range []string{"u1", "u2"} {
		if got := a.next(t).GetAck().GetUuid(); got != u {
			t.Fatalf("ack %q, want %q", got, u)
		}
	}
	// Refusals.
	for _, tc := range []struct {
		req  *masterv1.LaunchTaskRequest
		code codes.Code
		msg  string
	}{
		{&masterv1.LaunchTaskRequest{TaskId: "pa", Image: "busybox"}, codes.AlreadyExists, "never reused"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "busybox", AgentId: "nope"}, codes.NotFound, "no agent"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "busybox", Resources: &masterv1.Resources{Cpus: 64}}, codes.ResourceExhausted, "no agent has 64 cpus free: agent-"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "busybox", Resources: &masterv1.Resources{Cpus: 64}}, codes.ResourceExhausted, "has 0.5 cpus, 1.0 GiB memory free of 2 cpus, 1.0 GiB memory"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "busybox", Constraints: []string{"rack"}}, codes.InvalidArgument, "ATTRIBUTE:VALUE"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "busybox", Constraints: []string{"rack:r9"}}, codes.FailedPrecondition, "rack:r9"},
		{&masterv1.LaunchTaskRequest{TaskId: "a.b", Image: "busybox"}, codes.InvalidArgument, "dot"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "UPPER::bad"}, codes.InvalidArgument, "image"},
		{&masterv1.LaunchTaskRequest{TaskId: "x", Image: "busybox", Resources: &masterv1.Resources{Cpus: -1}}, codes.InvalidArgument, "non-negative"},
	} {
		_, err := c.LaunchTask(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.msg) {
			t.Errorf("launch %v: %v, want %s containing %q", tc.req, err, tc.code, tc.msg)
		}
	}
	r, _ := c.ReconcileTasks(ctx, &masterv1.ReconcileTasksRequest{TaskIds: []string{"never-launched"}})
	if r.Tasks[0].State != typesv1.TaskState_TASK_UNKNOWN {
		t.Errorf("reconcile of an unknown task: %v", r.Tasks[0])
	}

	// Silent: unreachable after 3 × 500 ms (how soon is for make bench).
	a.silence()
	waitTask(t, c, "pa", typesv1.TaskState_TASK_UNREACHABLE)
	waitTask(t, c, "notpa", typesv1.TaskState_TASK_LOST)
	waitTask(t, c, "staged", typesv1.TaskState_TASK_DROPPED)
	// The master ends the stream: the agent must register again.
	if err := <-a.end; status.Code(err) != codes.Aborted {
		t.Errorf("stream of an unreachable agent ended with %v, want Aborted", err)
	}
	// It returns with its tasks: reconciled, the dropped one killed.
	b, err := connectAgent(t, conn, &masterv1.Register{AgentId: a.id, Attributes: map[string]string{"rack": "r1"}, Tasks: []*masterv1.TaskStatus{
		{TaskId: "pa", State: typesv1.TaskState_TASK_RUNNING}, {TaskId: "notpa", State: typesv1.TaskState_TASK_RUNNING},
		{TaskId: "staged", State: typesv1.TaskState_TASK_RUNNING}}})
	if err != nil {
		t.Fatal(err)
	}
	if b.id != a.id {
		t.Fatalf("returning agent got ID %s, want %s", b.id, a.id)
	}
	if k := b.next(t).GetKill(); k.GetTaskId() != "staged" {
		t.Errorf("want a kill of the dropped task, got %v", k)
	}
	waitTask(t, c, "pa", typesv1.TaskState_TASK_RUNNING)
	waitTask(t, c, "notpa", typesv1.TaskState_TASK_RUNNING)
	waitTask(t, c, "staged", typesv1.TaskState_TASK_DROPPED)

	// Kill through the master; old news after a newer state is ignored.
	if _, err := c.KillTask(ctx, &masterv1.KillTaskRequest{TaskId: "pa"}); err != nil {
		t.Fatal(err)
	}
	if k := b.next(t).GetKill(); k.GetTaskId() != "pa" {
		t.Fatalf("want a kill of pa, got %v", k)
	}
	b.update("u3", "pa", typesv1.TaskState_TASK_KILLED)
	b.next(t)
	b.update("u4", "pa", typesv1.TaskState_TASK_STARTING)
	b.next(t)
	waitTask(t, c, "pa", typesv1.TaskState_TASK_KILLED)
	if _, err := c.KillTask(ctx, &masterv1.KillTaskRequest{TaskId: "pa"}); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("kill of an ended task: %v", err)
	}

	// Marked gone by an operator: tasks gone, and refused on return.
	if _, err := c.MarkAgentGone(ctx, &masterv1.MarkAgentGoneRequest{AgentId: b.id}); err != nil {
		t.Fatal(err)
	}
	waitTask(t, c, "notpa", typesv1.TaskState_TASK_GONE_BY_OPERATOR)
	if err := <-b.end; status.Code(err) != codes.FailedPrecondition {
		t.Errorf("stream of an agent marked gone ended with %v", err)
	}
	if _, err := connectAgent(t, conn, &masterv1.Register{AgentId: a.id}); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "marked gone") {
		t.Errorf("agent marked gone came back: %v", err)
	}
	if _, err := c.MarkAgentGone(ctx, &masterv1.MarkAgentGoneRequest{AgentId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Errorf("mark-gone of an unknown agent: %v", err)
	}
}

func TestMaxAgentAge(t *testing.T) {
	_, c, conn := startMaster(t, func(c *Config) { c.RegistryMaxAgentAge = 2 * time.Second }) // long enough to see it unreachable
	a, err := connectAgent(t, conn, &masterv1.Register{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LaunchTask(context.Background(), &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox"}); err != nil {
		t.Fatal(err)
	}
	a.next(t)
	a.update("u", "t", typesv1.TaskState_TASK_RUNNING)
	a.next(t)
	a.silence()
	waitTask(t, c, "t", typesv1.TaskState_TASK_UNREACHABLE)
	tk := waitTask(t, c, "t", typesv1.TaskState_TASK_GONE)
	if tk.Reason != typesv1.Reason_REASON_AGENT_REMOVED {
		t.Errorf("reason %s", tk.Reason)
	}
	r, _ := c.GetAgents(context.Background(), &masterv1.GetAgentsRequest{})
	if r.Agents[0].State != masterv1.AgentState_AGENT_GONE || r.Agents[0].GoneByOperator {
		t.Errorf("agent after max age: %v", r.Agents[0])
	}
}

func TestRestartKeepsTheRegistry(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	func() {
		m, c, conn := startMaster(t, func(c *Config) { c.WorkDir = dir })
		defer stopMaster(m)
		a, err := connectAgent(t, conn, &masterv1.Register{})
		if err != nil {
			t.Fatal(err)
		}
		c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox"})
		a.next(t)
		a.update("u", "t", typesv1.TaskState_TASK_RUNNING)
		a.next(t)
	}()
	_, c, _ := startMaster(t, func(c *Config) { c.WorkDir = dir })
	tk := waitTask(t, c, "t", typesv1.TaskState_TASK_RUNNING)
	if tk.Image != "busybox" {
		t.Errorf("task after restart: %v", tk)
	}
}

// subscribe reads events into a channel.
func subscribe(t *testing.T, c masterv1.OperatorClient, since uint64) (chan *masterv1.Event, chan error, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := c.Subscribe(ctx, &masterv1.SubscribeRequest{Since: since})
	if err != nil {
		t.Fatal(err)
	}
	evs, errc := make(chan *masterv1.Event, 100000), make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			for _, e := range r.Events {
				evs <- e
			}
		}
	}()
	t.Cleanup(cancel)
	return evs, errc, cancel
}

func TestSubscribe(t *testing.T) {
	_, c, conn := startMaster(t, func(c *Config) { c.EventBuffer, c.SubscriberLag, c.SubscriberHeartbeat = 50, 20, 200*time.Millisecond })
	evs, _, stop := subscribe(t, c, 0)
	first := <-evs
	if first.Type != masterv1.Event_SUBSCRIBED || first.Subscribed.GetState() == nil {
		t.Fatalf("first event %v", first)
	}
	for range 5 {
		if _, err := connectAgent(t, conn, &masterv1.Register{}); err != nil {
			t.Fatal(err)
		}
	}
	var last uint64
	for i := range 3 {
		e := <-evs
		if e.Type != masterv1.Event_AGENT_ADDED || e.Seq != first.Seq+uint64(i)+1 {
			t.Fatalf("event %d: %v", i, e)
		}
		last = e.Seq
	}
	stop()
	// Resume after the third: the fourth and fifth, no gap, then a heartbeat.
	evs, _, _ = subscribe(t, c, last)
	for i := range 2 {
		if e := <-evs; e.Seq != last+uint64(i)+1 || e.Type != masterv1.Event_AGENT_ADDED {
			t.Fatalf("resumed event %d: %v", i, e)
		}
	}
	select {
	case e := <-evs:
		if e.Type != masterv1.Event_HEARTBEAT || e.Seq != last+2 {
			t.Errorf("after the resumed events: %v", e)
		}
	case <-time.After(20 * time.Second):
		t.Error("no heartbeat within 20s (the master sends one every 200 ms)")
	}
	// Past the ring: told to take a new snapshot.
	for range 60 {
		connectAgent(t, conn, &masterv1.Register{})
	}
	_, errc, _ := subscribe(t, c, 1)
	if err := <-errc; status.Code(err) != codes.OutOfRange || !strings.Contains(err.Error(), "snapshot") {
		t.Errorf("resume from a dropped event: %v", err)
	}
	_, errc, _ = subscribe(t, c, 1<<40)
	if err := <-errc; status.Code(err) != codes.InvalidArgument {
		t.Errorf("resume from the future: %v", err)
	}
}

// A subscriber that stops reading is cut off with its resume point while
// another one keeps getting every event.
func TestStalledSubscriberIsCutOff(t *testing.T) {
	m, c, conn := startMaster(t, func(c *Config) { c.EventBuffer, c.SubscriberLag = 10000, 200 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Its own connection, with fixed HTTP/2 windows (no BDP growth), so
	// that the master's sends block after 64 KiB.
	sconn, err := grpc.NewClient(m.SocketAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close()
	stalled, err := masterv1.NewOperatorClient(sconn).Subscribe(ctx, &masterv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stalled.Recv(); err != nil {
		t.Fatal(err)
	}
	evs, errc, _ := subscribe(t, c, 0)
	<-evs
	// Big events (many attributes) fill the stalled one's windows fast.
	attrs := map[string]string{}
	for i := range 200 {
		attrs[strings.Repeat("k", 20)+string(rune('a'+i%26))+string(rune('a'+i/26))] = strings.Repeat("v", 50)
	}
	done := make(chan struct{})
	var registered atomic.Int64
	go func() {
		defer close(done)
		for counterValue(m.cutCounter) == 0 && ctx.Err() == nil {
			connectAgent(t, conn, &masterv1.Register{Attributes: attrs})
			registered.Add(1)
		}
	}()
	// The loop above only ends once the master cut the subscriber off; a
	// master that never does must fail the test, not hang it.
	start := time.Now()
	select {
	case <-done:
		t.Logf("cut off after %d agents registered, %s", registered.Load(), time.Since(start).Round(time.Millisecond))
	case <-time.After(2 * time.Minute):
		cancel()
		t.Fatalf("the stalled subscriber was not cut off within 2 minutes (lag limit 200 events, %d agents registered)", registered.Load())
	}
	// The stalled subscriber, reading again, gets what was sent, then a
	// resume point right after the last event it got: no gap.
	var got uint64
	var endErr error
	for {
		r, err := stalled.Recv()
		if err != nil {
			endErr = err
			break
		}
		for _, e := range r.Events {
			got = e.Seq
		}
	}
	if status.Code(endErr) != codes.ResourceExhausted || !strings.Contains(endErr.Error(), fmt.Sprintf("since=%d ", got)) {
		t.Fatalf("stalled subscriber, last event %d, ended with %v", got, endErr)
	}
	// The other one saw every event in order.
	select {
	case err := <-errc:
		t.Fatalf("reading subscriber ended: %v", err)
	default:
	}
	var prev uint64
	for len(evs) > 0 {
		e := <-evs
		if prev != 0 && e.Seq != prev+1 {
			t.Fatalf("gap: %d after %d", e.Seq, prev)
		}
		prev = e.Seq
	}
}

func counterValue(c interface{ Write(*dto.Metric) error }) float64 {
	var d dto.Metric
	c.Write(&d)
	return d.GetCounter().GetValue()
}

package master

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/master/schedclient"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// These run the real master with simulated agents and frameworks that
// speak the scheduler API; integration/frameworks_test.go runs real ones.

// fakeFramework is a framework on schedclient whose handler the test
// gives.
type fakeFramework struct {
	c      *schedclient.Client
	cancel context.CancelFunc
	done   chan error
}

func startFramework(t *testing.T, conn grpc.ClientConnInterface, info *schedulerv1.FrameworkInfo, h schedclient.Handler) *fakeFramework {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &fakeFramework{c: schedclient.New(schedclient.Config{Conn: conn, Info: info, MinBackoff: 20 * time.Millisecond}), cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- f.c.Run(ctx, h) }()
	t.Cleanup(func() { cancel(); <-f.done })
	return f
}

// runningAgent answers every launch with TASK_RUNNING and every kill with
// TASK_KILLED, as an agent would.
func runningAgent(t *testing.T, conn *grpc.ClientConn, res *masterv1.Resources) *fakeAgent {
	t.Helper()
	a, err := connectAgent(t, conn, &masterv1.Register{Resources: res})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		n := 0
		for m := range a.msgs {
			n++
			switch {
			case m.GetLaunch() != nil:
				a.update(fmt.Sprintf("%s-u%d", a.id, n), m.GetLaunch().GetTask().GetId(), typesv1.TaskState_TASK_RUNNING)
			case m.GetKill() != nil:
				a.update(fmt.Sprintf("%s-u%d", a.id, n), m.GetKill().GetTaskId(), typesv1.TaskState_TASK_KILLED)
			}
		}
	}()
	return a
}

// greedy launches 1-cpu tasks on every offer until it has want, and
// acknowledges every update; running counts its TASK_RUNNING tasks.
type greedy struct {
	mu     sync.Mutex
	prefix string
	max    int // tasks at most; 0: no bound
	// refuse is the accept's filter: what is left of an offer is not
	// offered to it again for this long (seconds).
	refuse  float64
	n       int
	running int
	events  []*schedulerv1.Event
}

func (g *greedy) handle(_ context.Context, c *schedclient.Client, ev *schedulerv1.Event) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.events = append(g.events, ev)
	for _, of := range ev.GetOffers().GetOffers() {
		have := schedclient.Resources(of)
		var tasks []*schedulerv1.TaskInfo
		for (g.max == 0 || g.n < g.max) && schedclient.Take(have, &masterv1.Resources{Cpus: 1, MemoryBytes: 64 << 20}) {
			g.n++
			tasks = append(tasks, schedclient.Task(fmt.Sprintf("%s-%d", g.prefix, g.n), "busybox", []string{"sleep", "1000"}, &masterv1.Resources{Cpus: 1, MemoryBytes: 64 << 20}))
		}
		c.Accept(schedclient.OfferIDs(of), g.refuse, schedclient.Launch(tasks...))
	}
	if s := ev.GetUpdate().GetStatus(); s != nil {
		if s.State == typesv1.TaskState_TASK_RUNNING && s.Uuid != "" {
			g.running++
		}
		c.Acknowledge(s)
	}
	return nil
}

func (g *greedy) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}

func info(name string, roles ...string) *schedulerv1.FrameworkInfo {
	return &schedulerv1.FrameworkInfo{Name: name, Roles: roles, FailoverTimeout: durationpb.New(time.Minute)}
}

// Two frameworks on saturating work in roles of weights 1 and 2 end with
// a 1:2 share of the cpus.
func TestFrameworkWeightedShares(t *testing.T) {
	_, c, conn := startMaster(t, func(cfg *Config) { cfg.AllocationInterval = 50 * time.Millisecond })
	if _, err := c.UpdateWeights(context.Background(), &masterv1.UpdateWeightsRequest{Weights: []*masterv1.WeightInfo{{Role: "gold", Weight: 2}}}); err != nil {
		t.Fatal(err)
	}
	// Both subscribe before any agent: the agents are shared out as they come.
	// What is left of an agent (memory without cpus) is refused for long:
	// remnants going back and forth would make the shares depend on timing.
	g1, g2 := &greedy{prefix: "silver", refuse: 3600}, &greedy{prefix: "gold", refuse: 3600}
	startFramework(t, conn, info("silver", "silver"), g1.handle)
	startFramework(t, conn, info("gold", "gold"), g2.handle)
	waitFor(t, func() bool {
		r, _ := c.GetFrameworks(context.Background(), &masterv1.GetFrameworksRequest{})
		return len(r.GetFrameworks()) == 2 && r.Frameworks[0].Connected && r.Frameworks[1].Connected
	})
	for range 12 {
		runningAgent(t, conn, &masterv1.Resources{Cpus: 1, MemoryBytes: 1 << 30})
	}
	waitFor(t, func() bool { return g1.count()+g2.count() == 12 })
	if s, g := g1.count(), g2.count(); s < 3 || s > 5 || g < 7 || g > 9 {
		t.Errorf("silver (weight 1) runs %d tasks, gold (weight 2) %d: want near 4 and 8", s, g)
	}
	r, err := c.GetRoles(context.Background(), &masterv1.GetRolesRequest{})
	if err != nil || len(r.Roles) != 2 || r.Roles[0].Name != "gold" || r.Roles[0].Weight != 2 || r.Roles[0].Allocated.GetCpus() != float64(g2.count()) {
		t.Errorf("GetRoles: %v %v", r, err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// An agent that stops heartbeating: its offers are rescinded; a
// partition-aware framework sees TASK_UNREACHABLE, another TASK_LOST.
func TestFrameworkAgentLostRescindsOffers(t *testing.T) {
	_, c, conn := startMaster(t, func(cfg *Config) { cfg.AllocationInterval = 50 * time.Millisecond })
	aware, plain := &greedy{prefix: "aware", max: 1}, &greedy{prefix: "plain", max: 1}
	ai := info("aware", "a")
	ai.Capabilities = []schedulerv1.FrameworkInfo_Capability{schedulerv1.FrameworkInfo_PARTITION_AWARE}
	startFramework(t, conn, ai, aware.handle)
	startFramework(t, conn, info("plain", "b"), plain.handle)
	ag := runningAgent(t, conn, &masterv1.Resources{Cpus: 3, MemoryBytes: 1 << 30})
	waitFor(t, func() bool { return aware.count() > 0 && plain.count() > 0 })
	// Leave an offer outstanding: a framework that launches nothing.
	var mu sync.Mutex
	var rescinded, offered []string
	startFramework(t, conn, info("idle", "c"), func(_ context.Context, _ *schedclient.Client, ev *schedulerv1.Event) error {
		mu.Lock()
		defer mu.Unlock()
		for _, o := range ev.GetOffers().GetOffers() {
			offered = append(offered, o.Id.Value)
		}
		if r := ev.GetRescind(); r != nil {
			rescinded = append(rescinded, r.OfferId.Value)
		}
		return nil
	})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(offered) > 0 })
	ag.silence()
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(rescinded) > 0 && rescinded[0] == offered[0] })
	state := func(g *greedy, task string) typesv1.TaskState {
		g.mu.Lock()
		defer g.mu.Unlock()
		var last typesv1.TaskState
		for _, e := range g.events {
			if s := e.GetUpdate().GetStatus(); s.GetTaskId() == task {
				last = s.State
			}
		}
		return last
	}
	waitFor(t, func() bool {
		return state(aware, "aware-1") == typesv1.TaskState_TASK_UNREACHABLE && state(plain, "plain-1") == typesv1.TaskState_TASK_LOST
	})
	if r, _ := c.GetOffers(context.Background(), &masterv1.GetOffersRequest{}); len(r.GetOffers()) != 0 {
		t.Errorf("offers of an unreachable agent outstanding: %v", r.Offers)
	}
}

// The operator's task launch and the frameworks share the allocator: an
// agent whose resources are all offered is reclaimed (offers rescinded)
// for the operator's task, and never double-booked.
func TestOperatorTaskAndFrameworksShareAgents(t *testing.T) {
	_, c, conn := startMaster(t, func(cfg *Config) { cfg.AllocationInterval = 50 * time.Millisecond })
	runningAgent(t, conn, &masterv1.Resources{Cpus: 2, MemoryBytes: 1 << 30})
	var mu sync.Mutex
	var offers []*schedulerv1.Offer
	var rescinds int
	f := startFramework(t, conn, info("hold", "*"), func(_ context.Context, _ *schedclient.Client, ev *schedulerv1.Event) error {
		mu.Lock()
		defer mu.Unlock()
		offers = append(offers, ev.GetOffers().GetOffers()...)
		if ev.GetRescind() != nil {
			rescinds++
		}
		return nil
	})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(offers) == 1 })
	if _, err := c.LaunchTask(context.Background(), &masterv1.LaunchTaskRequest{TaskId: "op", Image: "busybox",
		Resources: &masterv1.Resources{Cpus: 1.5, MemoryBytes: 64 << 20}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return rescinds == 1 && len(offers) == 2 })
	mu.Lock()
	got := schedclient.Resources(offers[1])
	mu.Unlock()
	if got.Cpus > 0.5+1e-9 {
		t.Errorf("after the operator's 1.5-cpu task the framework is offered %g cpus of 2", got.Cpus)
	}
	// The old offer is gone: accepting it drops the task.
	mu.Lock()
	old := offers[0]
	mu.Unlock()
	f.c.Accept(schedclient.OfferIDs(old), 0, schedclient.Launch(schedclient.Task("late", "busybox", nil, &masterv1.Resources{Cpus: 1})))
	waitFor(t, func() bool {
		r, _ := c.ReconcileTasks(context.Background(), &masterv1.ReconcileTasksRequest{TaskIds: []string{"late"}})
		return r.GetTasks()[0].GetState() == typesv1.TaskState_TASK_UNKNOWN
	})
}

// Who may: a call before subscribe, roles the ACL does not grant.
func TestFrameworkRefusals(t *testing.T) {
	_, _, conn := startMaster(t, nil)
	st, err := schedulerv1.NewSchedulerClient(conn).Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&schedulerv1.Call{Call: &schedulerv1.Call_Kill_{Kill: &schedulerv1.Call_Kill{TaskId: "x"}}})
	if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("kill before subscribe: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Frameworks = []FrameworkACL{{Principal: "web-sched", Roles: []string{"web"}}}
	m, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.mayRegister("web-sched", true, []string{"web"}); err != nil {
		t.Errorf("granted role: %v", err)
	}
	err = m.mayRegister("web-sched", true, []string{"web", "batch"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"batch"`) {
		t.Errorf("a role not granted: %v, want PermissionDenied naming the role", err)
	}
	if err := m.mayRegister("", false, []string{"anything"}); err != nil {
		t.Errorf("the unix socket's root: %v", err)
	}
	// Re-subscribing with an ID the master does not know.
	st, _ = schedulerv1.NewSchedulerClient(conn).Connect(context.Background())
	st.Send(&schedulerv1.Call{Call: &schedulerv1.Call_Subscribe_{Subscribe: &schedulerv1.Call_Subscribe{FrameworkInfo: &schedulerv1.FrameworkInfo{Id: "fw-nope", Name: "x"}}}})
	if _, err := st.Recv(); status.Code(err) != codes.NotFound {
		t.Errorf("unknown framework ID: %v, want NotFound", err)
	}
}

// An operator's teardown removes a framework at once: its tasks are
// killed, FRAMEWORK_REMOVED is published, and its ID may not subscribe
// again.
func TestFrameworkTeardown(t *testing.T) {
	_, c, conn := startMaster(t, func(cfg *Config) { cfg.AllocationInterval = 50 * time.Millisecond })
	events, _, stop := subscribe(t, c, 0)
	defer stop()
	runningAgent(t, conn, &masterv1.Resources{Cpus: 2, MemoryBytes: 1 << 30})
	g := &greedy{prefix: "td"}
	f := startFramework(t, conn, info("td", "*"), g.handle)
	waitFor(t, func() bool { return g.count() == 2 })
	id := f.c.FrameworkID()
	if _, err := c.TeardownFramework(context.Background(), &masterv1.TeardownFrameworkRequest{FrameworkId: id}); err != nil {
		t.Fatal(err)
	}
	waitTask(t, c, "td-1", typesv1.TaskState_TASK_KILLED)
	waitTask(t, c, "td-2", typesv1.TaskState_TASK_KILLED)
	if err := <-f.done; status.Code(err) != codes.NotFound && status.Code(err) != codes.FailedPrecondition {
		t.Errorf("the torn-down framework's client ended with %v, want it refused", err)
	}
	f.done <- nil // for the cleanup
	var types []string
	timeout := time.After(10 * time.Second)
	for !strings.Contains(strings.Join(types, " "), "FRAMEWORK_REMOVED") {
		select {
		case e := <-events:
			if e.Framework != nil {
				types = append(types, e.Type.String())
			}
		case <-timeout:
			t.Fatalf("framework events %v, want FRAMEWORK_ADDED … FRAMEWORK_REMOVED", types)
		}
	}
	if types[0] != "FRAMEWORK_ADDED" {
		t.Errorf("framework events %v, want FRAMEWORK_ADDED first", types)
	}
	if _, err := c.TeardownFramework(context.Background(), &masterv1.TeardownFrameworkRequest{FrameworkId: id}); status.Code(err) != codes.NotFound {
		t.Errorf("teardown of a removed framework: %v, want NotFound", err)
	}
}

// An agent marked gone: its frameworks get FAILURE, their tasks
// TASK_GONE_BY_OPERATOR (TASK_LOST without PARTITION_AWARE).
func TestFrameworkAgentGoneFailure(t *testing.T) {
	_, c, conn := startMaster(t, func(cfg *Config) { cfg.AllocationInterval = 50 * time.Millisecond })
	a := runningAgent(t, conn, &masterv1.Resources{Cpus: 1, MemoryBytes: 1 << 30})
	g := &greedy{prefix: "gone"}
	startFramework(t, conn, info("plain", "*"), g.handle)
	waitFor(t, func() bool { return g.count() == 1 })
	if _, err := c.MarkAgentGone(context.Background(), &masterv1.MarkAgentGoneRequest{AgentId: a.id}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		failure, lost := false, false
		for _, e := range g.events {
			failure = failure || e.GetFailure().GetAgentId() == a.id
			lost = lost || (e.GetUpdate().GetStatus().GetTaskId() == "gone-1" && e.GetUpdate().GetStatus().GetState() == typesv1.TaskState_TASK_LOST)
		}
		return failure && lost
	})
}

// schedclient subscribes again with the framework's ID when its
// connection breaks, and the update it had not acknowledged comes again.
func TestSchedclientResubscribes(t *testing.T) {
	m, _, conn := startMaster(t, func(cfg *Config) { cfg.AllocationInterval = 50 * time.Millisecond })
	runningAgent(t, conn, &masterv1.Resources{Cpus: 1, MemoryBytes: 1 << 30})
	var mu sync.Mutex
	var subscribed []string
	var uuids []string
	ackNow := false
	g := &greedy{prefix: "rs", max: 1}
	f := startFramework(t, conn, info("rs", "*"), func(ctx context.Context, c *schedclient.Client, ev *schedulerv1.Event) error {
		mu.Lock()
		if s := ev.GetSubscribed(); s != nil {
			subscribed = append(subscribed, s.FrameworkId)
		}
		if s := ev.GetUpdate().GetStatus(); s.GetUuid() != "" {
			uuids = append(uuids, s.Uuid)
			if !ackNow {
				mu.Unlock()
				return nil // not acknowledged, not counted
			}
		}
		mu.Unlock()
		return g.handle(ctx, c, ev)
	})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(uuids) == 1 })
	m.mu.Lock()
	m.frameworks[f.c.FrameworkID()].conn.close(status.Error(codes.Unavailable, "the test breaks the connection"))
	m.mu.Unlock()
	mu.Lock()
	ackNow = true
	mu.Unlock()
	waitFor(t, func() bool { return g.count() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(subscribed) != 2 || subscribed[0] != subscribed[1] {
		t.Errorf("subscriptions %v, want two with one framework ID", subscribed)
	}
	if len(uuids) < 2 || uuids[len(uuids)-1] != uuids[0] {
		t.Errorf("updates %v, want the unacknowledged one again after re-subscribing", uuids)
	}
}

//go:build bench

package integration

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/master/schedclient"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Offers → accept → TASK_RUNNING on the real master binary with simulated
// agents (in this process, speaking AgentGateway: each launch is answered
// with TASK_RUNNING at once), in tasks per second, against the baseline of
// the same run: the operator's LaunchTask of as many tasks on the same
// agents (the master placing them itself). Knobs: GEARBOX_BENCH_FW_AGENTS
// (200), GEARBOX_BENCH_FW_TASKS (20000). Target: ≥ 3,750 tasks/s (Nomad's
// C1M rate).
func TestBenchFrameworkLaunchRate(t *testing.T) {
	raiseFDLimit(t)
	nAgents, nTasks := envInt("GEARBOX_BENCH_FW_AGENTS", 200), envInt("GEARBOX_BENCH_FW_TASKS", 20000)
	m := startMasterProc(t, "--insecure", "--agent-ping-timeout", "5s", "--allocation-interval", "100ms")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conns := dialMany(t, m.listen, 50)
	var running atomic.Int64
	for i := range nAgents {
		a, err := registerSim(ctx, conns[i%len(conns)], i, nil)
		if err != nil {
			t.Fatal(err)
		}
		go a.heartbeat(ctx, 5*time.Second)
		go simRun(ctx, a, &running)
	}

	// Baseline: the operator's LaunchTask, 64 at a time.
	base := nTasks / 4
	start := time.Now()
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(base) {
					return
				}
				m.c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: fmt.Sprintf("op-%d", i), Image: "busybox",
					Resources: &masterv1.Resources{Cpus: 0.01, MemoryBytes: 1 << 20}})
			}
		}()
	}
	wg.Wait()
	for running.Load() < int64(base) {
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("baseline: %d of %d running after 5 minutes", running.Load(), base)
		}
		time.Sleep(time.Millisecond)
	}
	baseRate := float64(base) / time.Since(start).Seconds()

	// Frameworks: one accepting every offer with as many tasks as fit.
	running.Store(0)
	conn, err := grpc.NewClient(m.listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var launched atomic.Int64
	var fwRunning atomic.Int64
	res := &masterv1.Resources{Cpus: 0.01, MemoryBytes: 1 << 20}
	c := schedclient.New(schedclient.Config{Conn: conn, Info: &schedulerv1.FrameworkInfo{Name: "bench", FailoverTimeout: durationpb.New(time.Minute)}})
	start = time.Now()
	done := make(chan struct{})
	go c.Run(ctx, func(_ context.Context, c *schedclient.Client, ev *schedulerv1.Event) error {
		for _, of := range ev.GetOffers().GetOffers() {
			have := schedclient.Resources(of)
			var tasks []*schedulerv1.TaskInfo
			for launched.Load() < int64(nTasks) && schedclient.Take(have, res) {
				n := launched.Add(1)
				tasks = append(tasks, schedclient.Task(fmt.Sprintf("fw-%d", n), "busybox", nil, res))
			}
			c.Accept(schedclient.OfferIDs(of), 0, schedclient.Launch(tasks...))
		}
		if s := ev.GetUpdate().GetStatus(); s != nil {
			if s.State == typesv1.TaskState_TASK_RUNNING && fwRunning.Add(1) == int64(nTasks) {
				close(done)
			}
			c.Acknowledge(s)
		}
		return nil
	})
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		t.Fatalf("frameworks: %d of %d running after 10 minutes", fwRunning.Load(), nTasks)
	}
	fwRate := float64(nTasks) / time.Since(start).Seconds()
	t.Logf("offers → accept → TASK_RUNNING, %d agents: framework %d tasks at %.0f tasks/s; operator LaunchTask (baseline) %d tasks at %.0f tasks/s; ratio %.2f (target ≥ 3750 tasks/s)",
		nAgents, nTasks, fwRate, base, baseRate, fwRate/baseRate)
	if fwRate < 3750 {
		t.Errorf("framework launch rate %.0f tasks/s is below the 3750 target", fwRate)
	}
}

// simRun answers every launch with TASK_RUNNING.
func simRun(ctx context.Context, a *simAgent, running *atomic.Int64) {
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-a.acks:
			if l := msg.GetLaunch(); l != nil {
				n++
				a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Update{Update: &masterv1.StatusUpdate{
					Uuid: fmt.Sprintf("%s-%d", a.id, n), Status: &masterv1.TaskStatus{TaskId: l.GetTask().GetId(), State: typesv1.TaskState_TASK_RUNNING}}}})
				running.Add(1)
			}
		}
	}
}

// On a real agent: a framework's accept to TASK_RUNNING against the
// operator's task launch of the same task to TASK_RUNNING, alternating, in
// one run (target ≤ 1.2×). Knob: GEARBOX_BENCH_FW_REAL (10 of each).
func TestBenchFrameworkVsTaskLaunch(t *testing.T) {
	n := envInt("GEARBOX_BENCH_FW_REAL", 10)
	m := startMasterProc(t, "--allocation-interval", "100ms")
	startClusterAgent(t, m, "a1", "", true)
	events := subscribeEvents(t, m, 0)
	f := startTestFramework(t, m, fwInfo("bench", "*"), true)
	res := &masterv1.Resources{Cpus: 0.01, MemoryBytes: 8 << 20}
	running := func(id string) bool {
		for _, s := range events.taskStates(id) {
			if s == "TASK_RUNNING" {
				return true
			}
		}
		return false
	}
	var op, fw []time.Duration
	for i := range n {
		id := fmt.Sprintf("op-%d", i)
		start := time.Now()
		if _, err := m.c.LaunchTask(ctxT(t), &masterv1.LaunchTaskRequest{TaskId: id, Image: testImage, Command: []string{"sleep", "600"}, Resources: res}); err != nil {
			t.Fatal(err)
		}
		for !running(id) {
			if time.Since(start) > time.Minute {
				t.Fatalf("%s not running after a minute", id)
			}
			time.Sleep(2 * time.Millisecond)
		}
		op = append(op, time.Since(start))

		of := waitOffer(t, m, f, 0.01)
		id = fmt.Sprintf("fw-%d", i)
		at := len(f.snapshot())
		start = time.Now()
		f.c.Accept([]*schedulerv1.OfferID{{Value: of.Id}}, 0, schedclient.Launch(schedclient.Task(id, testImage, []string{"sleep", "600"}, res)))
		f.update(at, id, typesv1.TaskState_TASK_RUNNING, time.Minute)
		fw = append(fw, time.Since(start))
	}
	med := func(d []time.Duration) time.Duration { slices.Sort(d); return d[len(d)/2] }
	mo, mf := med(op), med(fw)
	t.Logf("launch → TASK_RUNNING on a real agent, median of %d: framework accept %s, gearbox task launch %s, ratio %.2f (target ≤ 1.2)", n, mf, mo, float64(mf)/float64(mo))
	if float64(mf) > 1.2*float64(mo) {
		t.Errorf("a framework's launch takes %.2f× the operator's", float64(mf)/float64(mo))
	}
}

package integration

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/master/schedclient"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// testFramework is a framework inside the test, on schedclient: every
// event lands in a queue the test reads. It acknowledges updates only
// when told to (ack).
type testFramework struct {
	t      *testing.T
	c      *schedclient.Client
	mu     sync.Mutex
	events []*schedulerv1.Event
	wake   chan struct{}
	ack    bool
	cancel context.CancelFunc
	done   chan error
}

func startTestFramework(t *testing.T, m *masterProc, info *schedulerv1.FrameworkInfo, ack bool) *testFramework {
	t.Helper()
	conn, err := grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	f := &testFramework{t: t, wake: make(chan struct{}, 1), ack: ack, done: make(chan error, 1)}
	f.c = schedclient.New(schedclient.Config{Conn: conn, Info: info, MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	go func() {
		f.done <- f.c.Run(ctx, func(_ context.Context, c *schedclient.Client, ev *schedulerv1.Event) error {
			f.mu.Lock()
			f.events = append(f.events, ev)
			f.mu.Unlock()
			select {
			case f.wake <- struct{}{}:
			default:
			}
			if u := ev.GetUpdate(); u != nil && f.ack {
				c.Acknowledge(u.GetStatus())
			}
			return nil
		})
	}()
	t.Cleanup(func() { f.stop(); conn.Close() })
	return f
}

func (f *testFramework) stop() {
	if f.cancel != nil {
		f.cancel()
		<-f.done
		f.cancel = nil
	}
}

// next waits for the first event after index from that match says yes to;
// it returns it and its index.
func (f *testFramework) next(from int, within time.Duration, what string, match func(*schedulerv1.Event) bool) (*schedulerv1.Event, int) {
	f.t.Helper()
	deadline := time.After(within)
	for {
		f.mu.Lock()
		for i := from; i < len(f.events); i++ {
			if match(f.events[i]) {
				ev := f.events[i]
				f.mu.Unlock()
				return ev, i
			}
		}
		f.mu.Unlock()
		select {
		case <-f.wake:
		case <-deadline:
			f.t.Fatalf("no %s within %s; events: %v", what, within, f.snapshot())
		}
	}
}

func (f *testFramework) snapshot() []*schedulerv1.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*schedulerv1.Event(nil), f.events...)
}

func (f *testFramework) offers(from int, within time.Duration) ([]*schedulerv1.Offer, int) {
	ev, i := f.next(from, within, "offers", func(e *schedulerv1.Event) bool { return len(e.GetOffers().GetOffers()) > 0 })
	return ev.GetOffers().GetOffers(), i
}

func (f *testFramework) update(from int, task string, state typesv1.TaskState, within time.Duration) (*schedulerv1.TaskStatus, int) {
	f.t.Helper()
	ev, i := f.next(from, within, fmt.Sprintf("update %s %s", task, state), func(e *schedulerv1.Event) bool {
		s := e.GetUpdate().GetStatus()
		return s.GetTaskId() == task && s.GetState() == state
	})
	return ev.GetUpdate().GetStatus(), i
}

// updates lists the states of a task's updates that need an
// acknowledgement (uuid set), in order.
func (f *testFramework) updates(task string) []string {
	var out []string
	for _, e := range f.snapshot() {
		if s := e.GetUpdate().GetStatus(); s.GetTaskId() == task && s.GetUuid() != "" {
			out = append(out, s.GetState().String())
		}
	}
	return out
}

func fwInfo(name string, roles ...string) *schedulerv1.FrameworkInfo {
	return &schedulerv1.FrameworkInfo{Name: name, Roles: roles, FailoverTimeout: durationpb.New(time.Minute),
		Capabilities: []schedulerv1.FrameworkInfo_Capability{schedulerv1.FrameworkInfo_PARTITION_AWARE}}
}

var smallTask = &masterv1.Resources{Cpus: 0.1, MemoryBytes: 32 << 20}

// The core: offers → accept → TASK_RUNNING → exit → TASK_FINISHED, each
// update acknowledged once; the accept's refusals as Mesos; LAUNCH_GROUP
// all or none; decline filters; suppress and revive.
func TestFrameworkOffersAcceptAndRefusals(t *testing.T) {
	m := startMasterProc(t, "--allocation-interval", "200ms")
	startClusterAgent(t, m, "a1", "rack:r1", true)
	startClusterAgent(t, m, "a2", "rack:r2", true)

	// A call before subscribe ends the connection.
	conn, _ := grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	st, err := schedulerv1.NewSchedulerClient(conn).Connect(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&schedulerv1.Call{Call: &schedulerv1.Call_Revive_{Revive: &schedulerv1.Call_Revive{}}})
	if _, err := st.Recv(); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a call before subscribe: %v, want FailedPrecondition", err)
	}

	f := startTestFramework(t, m, fwInfo("core", "web"), true)
	offers, at := f.offers(0, 20*time.Second)
	of := offers[0]
	if r := schedclient.Resources(of); r.Cpus != 2 || of.GetResources()[0].GetRole() != "web" || of.GetHostname() == "" || of.GetAttributes()["rack"] == "" {
		t.Fatalf("offer %v: want an agent's 2 cpus in role web, with its hostname and attributes", of)
	}
	// One offer of a1 (or a2), two tasks: one fits, the duplicate ID and
	// the one too big are refused.
	ok := schedclient.Task("f-ok", testImage, []string{"sh", "-c", "sleep 1"}, smallTask)
	dup := schedclient.Task("f-ok", testImage, []string{"true"}, smallTask)
	big := schedclient.Task("f-big", testImage, []string{"true"}, &masterv1.Resources{Cpus: 3, MemoryBytes: 32 << 20})
	if err := f.c.Accept(schedclient.OfferIDs(of), 0, schedclient.Launch(ok, dup), schedclient.Launch(big)); err != nil {
		t.Fatal(err)
	}
	s, _ := f.update(at, "f-big", typesv1.TaskState_TASK_ERROR, 10*time.Second)
	if s.Reason != typesv1.Reason_REASON_TASK_INVALID || s.Uuid != "" {
		t.Errorf("too big: %v, want REASON_TASK_INVALID without uuid", s)
	}
	s, _ = f.update(at, "f-ok", typesv1.TaskState_TASK_ERROR, 10*time.Second)
	if s.Reason != typesv1.Reason_REASON_TASK_INVALID || !strings.Contains(s.Message, "f-ok") {
		t.Errorf("a duplicate task ID: %v, want REASON_TASK_INVALID naming it", s)
	}
	f.update(at, "f-ok", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	f.update(at, "f-ok", typesv1.TaskState_TASK_FINISHED, 30*time.Second)
	task := waitTaskState(t, m, "f-ok", typesv1.TaskState_TASK_FINISHED, 10*time.Second)
	if task.FrameworkId != f.c.FrameworkID() || task.Role != "web" {
		t.Errorf("task %v: want framework %s, role web", task, f.c.FrameworkID())
	}
	// Every update acknowledged once: none is resent, none pending.
	time.Sleep(500 * time.Millisecond)
	got := f.updates("f-ok")
	seen := map[string]bool{}
	for _, st := range got {
		if seen[st] {
			t.Errorf("updates of f-ok: %v, want each state once", got)
		}
		seen[st] = true
	}
	if !seen["TASK_RUNNING"] || !seen["TASK_FINISHED"] || got[len(got)-1] != "TASK_FINISHED" {
		t.Errorf("updates of f-ok: %v, want TASK_RUNNING, then TASK_FINISHED last", got)
	}
	fws, err := m.c.GetFrameworks(ctxT(t), &masterv1.GetFrameworksRequest{})
	if err != nil || len(fws.Frameworks) != 1 || fws.Frameworks[0].PendingUpdates != 0 || !fws.Frameworks[0].Connected {
		t.Errorf("GetFrameworks: %v (%v), want one connected framework with nothing pending", fws, err)
	}

	// The same offer again: it was used.
	f.c.Accept(schedclient.OfferIDs(of), 0, schedclient.Launch(schedclient.Task("f-stale", testImage, []string{"true"}, smallTask)))
	s, _ = f.update(at, "f-stale", typesv1.TaskState_TASK_DROPPED, 10*time.Second)
	if s.Reason != typesv1.Reason_REASON_INVALID_OFFERS {
		t.Errorf("a used offer: %v, want REASON_INVALID_OFFERS", s)
	}
	testLaunchGroup(t, m, f)
	testDeclineAndSuppress(t, m, f)
}

// testLaunchGroup: a group with one bad task launches none; a good one
// runs all on one agent.
func testLaunchGroup(t *testing.T, m *masterProc, f *testFramework) {
	of := waitOffer(t, m, f, 0.5)
	at := len(f.snapshot())
	g1 := schedclient.Task("g-1", testImage, []string{"sleep", "60"}, smallTask)
	g2 := schedclient.Task("g-2", testImage, []string{"sleep", "60"}, smallTask)
	gbad := schedclient.Task("g-bad", "", []string{"true"}, smallTask)
	f.c.Accept([]*schedulerv1.OfferID{{Value: of.Id}}, 0, schedclient.LaunchGroup(g1, gbad))
	s, _ := f.update(at, "g-1", typesv1.TaskState_TASK_ERROR, 10*time.Second)
	if s.Reason != typesv1.Reason_REASON_TASK_GROUP_INVALID {
		t.Errorf("group with a bad task: g-1 %v, want REASON_TASK_GROUP_INVALID", s)
	}
	of = waitOffer(t, m, f, 0.5)
	f.c.Accept([]*schedulerv1.OfferID{{Value: of.Id}}, 0, schedclient.LaunchGroup(g2, schedclient.Task("g-3", testImage, []string{"sleep", "60"}, smallTask)))
	s2, _ := f.update(at, "g-2", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	s3, _ := f.update(at, "g-3", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	if s2.AgentId != s3.AgentId || s2.AgentId != of.AgentId {
		t.Errorf("group ran on %s and %s, offer was %s", s2.AgentId, s3.AgentId, of.AgentId)
	}
}

// waitOffer waits for an outstanding offer of f with at least cpus.
func waitOffer(t *testing.T, m *masterProc, f *testFramework, cpus float64) *masterv1.OfferInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, o := range outstanding(t, m, f.c.FrameworkID()) {
			if o.Resources.GetCpus() >= cpus {
				return o
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no offer of %g cpus to %s within 20s", cpus, f.c.FrameworkID())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// testDeclineAndSuppress: a declined agent is not offered to the same
// framework within refuse_seconds but is to another; suppress stops
// offers, revive brings them back.
func testDeclineAndSuppress(t *testing.T, m *masterProc, f *testFramework) {
	f.c.Suppress()
	time.Sleep(time.Second) // outstanding offers are used or declined below
	for _, of := range outstanding(t, m, f.c.FrameworkID()) {
		f.c.Decline([]*schedulerv1.OfferID{{Value: of.Id}}, 60)
	}
	mark := len(f.snapshot())
	other := startTestFramework(t, m, fwInfo("other", "batch"), true)
	o2, _ := other.offers(0, 20*time.Second)
	time.Sleep(time.Second)
	for _, e := range f.snapshot()[mark:] {
		if len(e.GetOffers().GetOffers()) > 0 {
			t.Fatalf("a suppressed framework got offers: %v", e)
		}
	}
	declined := map[string]bool{}
	for _, of := range o2 {
		declined[of.AgentId] = true
	}
	other.c.Decline(schedclient.OfferIDs(o2...), 60)
	// Revive drops f's filters: the agents come back to it.
	f.c.Revive()
	offers, _ := f.offers(mark, 20*time.Second)
	if len(offers) == 0 {
		t.Fatal("no offers after revive")
	}
	// other declined its agents for 60 s: it must not see them again.
	mark2 := len(other.snapshot())
	f.c.Decline(schedclient.OfferIDs(offers...), 0)
	time.Sleep(2 * time.Second)
	for _, e := range other.snapshot()[mark2:] {
		for _, of := range e.GetOffers().GetOffers() {
			if declined[of.AgentId] {
				t.Errorf("agent %s offered again to the framework that declined it for 60 s", of.AgentId)
			}
		}
	}
}

func outstanding(t *testing.T, m *masterProc, fw string) []*masterv1.OfferInfo {
	r, err := m.c.GetOffers(ctxT(t), &masterv1.GetOffersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*masterv1.OfferInfo
	for _, o := range r.Offers {
		if o.FrameworkId == fw {
			out = append(out, o)
		}
	}
	return out
}

// Unacknowledged updates are resent after a re-subscription and after a
// master restart, with the same uuid, until acknowledged.
func TestFrameworkUpdatesResent(t *testing.T) {
	m := startMasterProc(t, "--allocation-interval", "200ms", "--status-update-retry", "1s")
	startClusterAgent(t, m, "a1", "", true)
	f := startTestFramework(t, m, fwInfo("noack", "*"), false)
	offers, at := f.offers(0, 20*time.Second)
	f.c.Accept(schedclient.OfferIDs(offers[0]), 0, schedclient.Launch(schedclient.Task("r-1", testImage, []string{"sleep", "600"}, smallTask)))
	withUUID := func(e *schedulerv1.Event) bool {
		return e.GetUpdate().GetStatus().GetTaskId() == "r-1" && e.GetUpdate().GetStatus().GetUuid() != ""
	}
	ev, at := f.next(at, 30*time.Second, "an update of r-1", withUUID)
	first := ev.GetUpdate().GetStatus()
	// Not acknowledged: resent (after --status-update-retry), the same
	// update and nothing after it.
	ev, _ = f.next(at+1, 10*time.Second, "the update resent", withUUID)
	if again := ev.GetUpdate().GetStatus(); again.Uuid != first.Uuid {
		t.Errorf("resent %v, first %v: want the same uuid", again, first)
	}
	id := f.c.FrameworkID()
	f.stop()
	m.stop(t, syscall.SIGTERM)
	m.start(t)
	m.waitHealthy(t)
	info := fwInfo("noack", "*")
	info.Id = id
	f2 := startTestFramework(t, m, info, true)
	f2.next(0, 20*time.Second, "the unacknowledged update after a master restart", func(e *schedulerv1.Event) bool {
		return e.GetUpdate().GetStatus().GetUuid() == first.Uuid
	})
	if sub := f2.snapshot()[0].GetSubscribed(); sub.GetFrameworkId() != id {
		t.Errorf("re-subscribed as %s, want %s", sub.GetFrameworkId(), id)
	}
	// Acknowledged now: no longer pending.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := m.c.GetFrameworks(ctxT(t), &masterv1.GetFrameworksRequest{})
		if err == nil && len(r.Frameworks) == 1 && r.Frameworks[0].PendingUpdates == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pending updates after acknowledging: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sleepFramework runs examples/sleep-framework against m; its stdout lines
// come on lines.
type sleepFramework struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	done  chan error
}

func runSleepFramework(t *testing.T, m *masterProc, args ...string) *sleepFramework {
	t.Helper()
	s := &sleepFramework{done: make(chan error, 1)}
	s.cmd = exec.Command(filepath.Join(h.bin, "sleep-framework"), append([]string{"--master", m.addr, "--image", testImage}, args...)...)
	s.cmd.Stderr = os.Stderr
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			s.mu.Unlock()
		}
		s.done <- s.cmd.Wait()
	}()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	return s
}

func (s *sleepFramework) waitLine(t *testing.T, prefix string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s.mu.Lock()
		for _, l := range s.lines {
			if strings.HasPrefix(l, prefix) {
				s.mu.Unlock()
				return
			}
		}
		lines := strings.Join(s.lines, "\n")
		s.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("sleep-framework printed no %q within %s:\n%s", prefix, within, lines)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The example framework end to end: three tasks run and finish, every
// update printed once, and it tears itself down.
func TestSleepFramework(t *testing.T) {
	m := startMasterProc(t, "--allocation-interval", "200ms")
	startClusterAgent(t, m, "a1", "", true)
	startClusterAgent(t, m, "a2", "", true)
	s := runSleepFramework(t, m, "--tasks", "3", "--cmd", "sleep 1", "--role", "sleep")
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("sleep-framework: %v\n%s", err, strings.Join(s.lines, "\n"))
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("sleep-framework did not finish:\n%s", strings.Join(s.lines, "\n"))
	}
	out := strings.Join(s.lines, "\n")
	for i := range 3 {
		for _, st := range []string{"TASK_RUNNING", "TASK_FINISHED"} {
			if n := strings.Count(out, fmt.Sprintf("task sleep-%d %s ", i, st)); n != 1 {
				t.Errorf("sleep-%d %s printed %d times, want once:\n%s", i, st, n, out)
			}
		}
	}
	if r, err := m.c.GetFrameworks(ctxT(t), &masterv1.GetFrameworksRequest{}); err != nil || len(r.Frameworks) != 0 {
		t.Errorf("after teardown: %v %v", r, err)
	}
}

// The framework's process SIGKILLed and started again within its
// failover_timeout keeps its tasks (the same containers, the same pids);
// beyond it, they are killed.
func TestFrameworkFailover(t *testing.T) {
	m := startMasterProc(t, "--allocation-interval", "200ms")
	a1 := startClusterAgent(t, m, "a1", "", true)
	idFile := filepath.Join(t.TempDir(), "fw.id")
	args := []string{"--tasks", "2", "--cmd", "sleep 600", "--id-file", idFile, "--failover-timeout", "4s", "--keep", "--cpus", "0.1"}
	s := runSleepFramework(t, m, args...)
	s.waitLine(t, "task sleep-0 TASK_RUNNING", 60*time.Second)
	s.waitLine(t, "task sleep-1 TASK_RUNNING", 60*time.Second)
	pid := func(id string) uint32 {
		c, err := a1.container(t, id)
		if err != nil {
			t.Fatal(err)
		}
		return c.Pid
	}
	p0 := pid("sleep-0")
	s.cmd.Process.Kill()
	<-s.done
	s2 := runSleepFramework(t, m, args...)
	s2.waitLine(t, "task sleep-0 TASK_RUNNING", 20*time.Second)
	if p := pid("sleep-0"); p != p0 || p == 0 {
		t.Errorf("after failover sleep-0 runs as pid %d, before %d", p, p0)
	}
	time.Sleep(time.Second)
	s2.mu.Lock()
	relaunched := strings.Contains(strings.Join(s2.lines, "\n"), "TASK_ERROR")
	s2.mu.Unlock()
	if relaunched {
		t.Errorf("the restarted framework launched its tasks again: %v", s2.lines)
	}
	// Beyond failover_timeout: removed, tasks killed.
	s2.cmd.Process.Kill()
	<-s2.done
	waitTaskState(t, m, "sleep-0", typesv1.TaskState_TASK_KILLED, 30*time.Second)
	waitTaskState(t, m, "sleep-1", typesv1.TaskState_TASK_KILLED, 30*time.Second)
	if r, err := m.c.GetFrameworks(ctxT(t), &masterv1.GetFrameworksRequest{}); err != nil || len(r.Frameworks) != 0 {
		t.Errorf("after failover_timeout: %v %v", r, err)
	}
}

// Who may: over mutual TLS a framework is its certificate's name, and the
// master's [[frameworks]] entries say in which roles it may register;
// anything else is PermissionDenied naming the role.
func TestFrameworkRolesByCertificate(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "master.toml")
	if err := os.WriteFile(cfg, []byte("[[frameworks]]\nprincipal = \"deployer\"\nroles = [\"web\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := startMasterWith(t, true, "--config", cfg)
	subscribe := func(role string) error {
		st, err := schedulerv1.NewSchedulerClient(m.conn).Connect(ctxT(t))
		if err != nil {
			return err
		}
		st.Send(&schedulerv1.Call{Call: &schedulerv1.Call_Subscribe_{Subscribe: &schedulerv1.Call_Subscribe{FrameworkInfo: fwInfo("acl", role)}}})
		ev, err := st.Recv()
		if err == nil && ev.GetSubscribed() == nil {
			return fmt.Errorf("answered %v", ev)
		}
		return err
	}
	if err := subscribe("web"); err != nil {
		t.Errorf("deployer in role web: %v", err)
	}
	if err := subscribe("batch"); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"batch"`) || !strings.Contains(err.Error(), `"deployer"`) {
		t.Errorf("deployer in role batch: %v, want PermissionDenied naming the role and the certificate", err)
	}
	r, err := m.c.GetFrameworks(ctxT(t), &masterv1.GetFrameworksRequest{})
	if err != nil || len(r.Frameworks) != 1 || r.Frameworks[0].Principal != "deployer" {
		t.Errorf("GetFrameworks: %v %v, want one framework of principal deployer", r, err)
	}
	// The CLI's view.
	if out := m.cli("frameworks", "-o", "json"); out.code != 0 || !strings.Contains(out.stdout, `"principal": "deployer"`) {
		t.Errorf("gearbox frameworks -o json: %s", out)
	}
	if out := m.cli("weights", "set", "web=2"); out.code != 0 {
		t.Errorf("gearbox weights set: %s", out)
	}
	if out := m.cli("roles"); out.code != 0 || !strings.Contains(out.stdout, "web") || !strings.Contains(out.stdout, "2") {
		t.Errorf("gearbox roles: %s", out)
	}
}

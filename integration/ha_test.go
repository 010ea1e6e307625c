package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Issue 18's tests: a real 3-member etcd, three masters, real agents and
// the sleep framework (ha_harness_test.go).

// The leader is SIGKILLed while the sleep framework's tasks are being
// launched: another leads within the lease's TTL + 2 s; every task runs
// once (one container each on the agents), the framework keeps its ID and
// its tasks, and every status update reaches it and is acknowledged. The
// CLI, given all three masters, works whichever leads.
func TestHALeaderKilledWhileLaunching(t *testing.T) {
	c := startHA(t, haOptions{agents: 2, image: true})
	old := c.leader()
	// An event subscriber, given all three masters.
	events, eventsErr := c.follow("events", "-o", "json")
	const n = 8
	idFile := filepath.Join(t.TempDir(), "fw.id")
	s := runSleepFramework(t, &masterProc{addr: c.addrs()}, "--tasks", fmt.Sprint(n), "--cmd", "sleep 600", "--keep",
		"--cpus", "0.1", "--id-file", idFile, "--failover-timeout", "2m")
	// The first update: the other launches are on their way.
	s.waitLine(t, "task sleep-", 60*time.Second)
	killed := time.Now()
	c.killMaster(old, syscall.SIGKILL)
	leader, err := c.pollLeader(old, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	serving := time.Since(killed)
	// Elected when the new leader says it was (this host's clock).
	ms, err := c.mastersOf(leader)
	var elected time.Time
	for _, mi := range ms {
		if mi.Leader && mi.ElectedAt != nil {
			elected = mi.ElectedAt.AsTime()
		}
	}
	if err != nil || elected.IsZero() {
		t.Fatalf("the new leader's GetMasters: %v %v, want it listed as leader with elected_at", ms, err)
	}
	took := elected.Sub(killed)
	t.Logf("master %d elected %s after master %d was killed, serving after %s (election TTL %s)", leader, took.Round(10*time.Millisecond),
		old, serving.Round(10*time.Millisecond), haTTL)
	if took > haTTL+2*time.Second {
		t.Errorf("a new leader %s after the leader was killed, want within the TTL (%s) + 2s", took.Round(10*time.Millisecond), haTTL)
	}

	// The CLI with all three masters, the dead one first: the next one.
	testHACLI(t, c, leader, old)

	// No task lost, none launched twice.
	lm := c.masters[leader]
	for i := range n {
		waitTaskState(t, lm, fmt.Sprintf("sleep-%d", i), typesv1.TaskState_TASK_RUNNING, 60*time.Second)
	}
	all, running := c.containers()
	for i := range n {
		id := fmt.Sprintf("sleep-%d", i)
		if all[id] != 1 || running[id] != 1 {
			t.Errorf("task %s: %d containers (%d running) on the agents, want one running", id, all[id], running[id])
		}
	}
	if len(all) != n {
		t.Errorf("containers on the agents: %v, want the %d tasks' only", all, n)
	}

	// The framework failed over to the new leader with its ID and tasks,
	// and acknowledged every update it got.
	b, _ := os.ReadFile(idFile)
	fwID := strings.TrimSpace(string(b))
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := lm.c.GetFrameworks(ctxT(t), &masterv1.GetFrameworksRequest{})
		if err == nil && len(r.Frameworks) == 1 && r.Frameworks[0].Id == fwID && r.Frameworks[0].Connected && r.Frameworks[0].PendingUpdates == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("frameworks on the new leader: %v %v, want %s connected with no update pending", r, err, fwID)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tasks, err := lm.c.GetTasks(ctxT(t), &masterv1.GetTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks.Tasks {
		if tk.FrameworkId != fwID {
			t.Errorf("task %s belongs to framework %q, want %s", tk.Id, tk.FrameworkId, fwID)
		}
	}
	s.mu.Lock()
	out := strings.Join(s.lines, "\n")
	s.mu.Unlock()
	for i := range n {
		// At least once: an update whose acknowledgement the dead
		// leader had not written yet comes again from the new one.
		if k := strings.Count(out, fmt.Sprintf("task sleep-%d TASK_RUNNING ", i)); k == 0 {
			t.Errorf("the framework got no TASK_RUNNING of sleep-%d:\n%s", i, out)
		} else if k > 1 {
			t.Logf("sleep-%d's TASK_RUNNING came %d times", i, k)
		}
	}
	for _, bad := range []string{"TASK_ERROR", "TASK_LOST", "TASK_DROPPED", "TASK_FAILED", "TASK_UNKNOWN", "TASK_GONE"} {
		if strings.Contains(out, " "+bad+" ") {
			t.Errorf("the framework saw %s:\n%s", bad, out)
		}
	}
	if strings.Count(out, "subscribed "+fwID) < 2 {
		t.Errorf("the framework did not subscribe again as %s:\n%s", fwID, out)
	}

	// The subscriber resumed at the new leader: its term's events are
	// numbered from term<<32, so the old term's point is lost there and a
	// new snapshot is taken, saying so; never a silent gap.
	hl, err := lm.c.GetHealth(ctxT(t), &masterv1.GetHealthRequest{})
	if err != nil || !hl.Leader || hl.Term < 2 {
		t.Fatalf("the new leader's health: %v %v, want leading a later term", hl, err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(eventsErr.String(), "taking a new snapshot") || maxSeq(events.String()) < hl.Term<<32 {
		if time.Now().After(deadline) {
			t.Fatalf("gearbox events after the failover (term %d, events from %d): highest seq %d; stderr:\n%s", hl.Term, hl.Term<<32, maxSeq(events.String()), eventsErr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The killed master comes back as a standby.
	c.restartMaster(old)
	if l := c.leader(); l != leader {
		t.Errorf("master %d leads after master %d came back, want %d still", l, old, leader)
	}
	testHACLI(t, c, leader, -1)
}

// testHACLI: gearbox agents and gearbox masters with --master naming all
// three, in every rotation (the leader first, in the middle, last; dead
// is dead, -1 none).
func testHACLI(t *testing.T, c *haCluster, leader, dead int) {
	t.Helper()
	for _, order := range [][]int{{0, 1, 2}, {1, 2, 0}, {2, 0, 1}} {
		r := c.cli(order, "agents", "-o", "json")
		if r.code != 0 || strings.Count(r.stdout, `"AGENT_ACTIVE"`) != len(c.agents) {
			t.Errorf("gearbox --master %v agents: %s", order, r)
		}
		r = c.cli(order, "masters", "-o", "json")
		var ms []struct {
			Address string `json:"address"`
			Version string `json:"version"`
			Leader  bool   `json:"leader"`
		}
		if err := json.Unmarshal([]byte(r.stdout), &ms); r.code != 0 || err != nil {
			t.Errorf("gearbox --master %v masters -o json: %v %s", order, err, r)
			continue
		}
		leaders, listed := 0, map[string]bool{}
		for _, m := range ms {
			listed[m.Address] = true
			if m.Version == "" {
				t.Errorf("gearbox masters: %s has no version", m.Address)
			}
			if m.Leader {
				leaders++
				if m.Address != c.masters[leader].listen {
					t.Errorf("gearbox masters names %s the leader, want %s", m.Address, c.masters[leader].listen)
				}
			}
		}
		for i, m := range c.masters {
			if i != dead && !listed[m.listen] {
				t.Errorf("gearbox masters does not list %s:\n%s", m.listen, r.stdout)
			}
		}
		if leaders != 1 {
			t.Errorf("gearbox masters shows %d leaders, want one:\n%s", leaders, r.stdout)
		}
	}
	if r := c.cli([]int{0, 1, 2}, "masters"); r.code != 0 || !strings.Contains(r.stdout, c.masters[leader].listen) {
		t.Errorf("gearbox masters: %s", r)
	}
}

// The leader is SIGSTOPped past its lease; another takes over; SIGCONT:
// the old one steps down, and nothing it would write lands in the
// registry: neither an operator's launch it took while paused, nor the
// "unreachable" its agents would look to it when it wakes, their
// heartbeats long missed.
func TestHAPausedLeaderIsFenced(t *testing.T) {
	c := startHA(t, haOptions{agents: 2})
	old := c.leader()
	var ids []string
	for _, a := range c.agents {
		ids = append(ids, a.agentID(t))
	}
	waitAgentsActive(t, c.masters[old], len(ids))
	// A connection to the old leader set up now: the call made on it
	// while the process is stopped waits in its socket, and is served
	// when it resumes.
	conn, err := grpc.NewClient("unix://"+c.masters[old].sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	oldc := masterv1.NewOperatorClient(conn)
	if _, err := oldc.GetHealth(ctxT(t), &masterv1.GetHealthRequest{}); err != nil {
		t.Fatal(err)
	}

	c.killMaster(old, syscall.SIGSTOP)
	stopped := time.Now()
	// Two changes sent to it while it is stopped: a launch, and a weight,
	// which it writes to the registry whatever its agents.
	launched, weighted := make(chan error, 1), make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := oldc.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "fenced", Image: testImage, Command: []string{"sleep", "600"}})
		launched <- err
	}()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := oldc.UpdateWeights(ctx, &masterv1.UpdateWeightsRequest{Weights: []*masterv1.WeightInfo{{Role: "fenced", Weight: 3}}})
		weighted <- err
	}()
	leader, err := c.pollLeader(old, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("master %d leads %s after master %d was stopped", leader, time.Since(stopped).Round(10*time.Millisecond), old)
	waitAgentsActive(t, c.masters[leader], len(ids))
	// Past the old leader's agent ping timeouts (3 s) as well.
	time.Sleep(time.Until(stopped.Add(haTTL + 4*time.Second)))
	takeover := c.etcdRev()
	c.killMaster(old, syscall.SIGCONT)

	// It steps down: it names the new leader, refuses an operator's call
	// with NOT_LEADER and the leader's address.
	deadline := time.Now().Add(20 * time.Second)
	for {
		ms, err := c.mastersOf(old)
		_, callErr := c.masters[old].c.GetAgents(ctxT(t), &masterv1.GetAgentsRequest{})
		hint, notLeader := typesv1.LeaderHint(callErr)
		if err == nil && leaderOf(ms) == c.masters[leader].listen && notLeader && hint == c.masters[leader].listen &&
			status.Code(callErr) == codes.Unavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("master %d after SIGCONT: masters %v (%v); GetAgents: %v; want it a standby naming %s", old, ms, err, callErr, c.masters[leader].listen)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for what, ch := range map[string]chan error{"launch": launched, "weight": weighted} {
		select {
		case err := <-ch:
			if err == nil {
				t.Errorf("the deposed leader accepted the %s it got while paused", what)
			} else {
				t.Logf("the %s sent to the paused leader: %v", what, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("the %s sent to the paused leader has no answer 30s after it resumed", what)
		}
	}
	// Let anything it still had in flight land, if it could.
	time.Sleep(2 * time.Second)
	tasks, _ := c.etcdTasks()
	if tk, ok := tasks["fenced"]; ok {
		t.Errorf("the deposed leader's task is in the registry: %+v (keys written since the takeover: %v)", tk, c.etcdKeysAfter(takeover))
	}
	c.etcdRange("weights/", func(role string, v []byte, rev int64) {
		if role == "fenced" {
			t.Errorf("the deposed leader's weight is in the registry: %s at revision %d (the takeover was at %d)", v, rev, takeover)
		}
	})
	for id, a := range c.etcdAgents() {
		if a.State != "ACTIVE" {
			t.Errorf("agent %s is %s in the registry, want ACTIVE: the deposed leader's write landed (keys written since the takeover: %v)", id, a.State, c.etcdKeysAfter(takeover))
		}
	}
	if l := c.leaderSeen(-1); l != leader {
		t.Errorf("after the old leader resumed the masters agree on %d, want %d", l, leader)
	}
	if r, err := c.masters[leader].c.GetHealth(ctxT(t), &masterv1.GetHealthRequest{}); err != nil || r.AgentsActive != int32(len(ids)) {
		t.Errorf("the leader's health: %v %v, want %d agents active", r, err, len(ids))
	}
}

func leaderOf(ms []*masterv1.MasterInfo) string {
	for _, m := range ms {
		if m.Leader {
			return m.Address
		}
	}
	return ""
}

func waitAgentsActive(t *testing.T, m *masterProc, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := m.c.GetHealth(ctxT(t), &masterv1.GetHealthRequest{})
		if err == nil && int(r.AgentsActive) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master %s: %v %v, want %d agents active", m.listen, r, err, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// One etcd member lost changes nothing; two (no quorum): changes are
// refused with an error that names etcd, reads go on; both back: the
// cluster goes on.
func TestHAEtcdMembersLost(t *testing.T) {
	c := startHA(t, haOptions{agents: 1, image: true})
	all := []int{0, 1, 2}
	launch := func(id string) result {
		return c.cli(all, "task", "launch", "--id", id, "--cpus", "0.1", "--memory", "32m", testImage, "sleep", "600")
	}
	leader := c.leader()
	if err := c.etcd.Kill(2); err != nil {
		t.Fatal(err)
	}
	if r := launch("one-down"); r.code != 0 {
		t.Fatalf("task launch with one etcd member down: %s", r)
	}
	waitTaskState(t, c.masters[leader], "one-down", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	if l := c.leaderSeen(-1); l != leader {
		t.Errorf("with one etcd member down master %d leads, was %d", l, leader)
	}

	if err := c.etcd.Kill(1); err != nil {
		t.Fatal(err)
	}
	r := launch("no-quorum")
	if r.code == 0 || !strings.Contains(r.stderr, "etcd") || !strings.Contains(r.stderr, "cannot be written") {
		t.Errorf("task launch without etcd's quorum: %s, want refused with an error that says etcd cannot be written", r)
	}
	t.Logf("task launch without quorum: %s", strings.TrimSpace(r.stderr))
	// The leader says what it sees of etcd; from then on it refuses
	// changes before they touch its memory.
	health := func(want func(string) bool, what string) {
		deadline := time.Now().Add(20 * time.Second)
		for {
			r, err := c.masters[leader].c.GetHealth(ctxT(t), &masterv1.GetHealthRequest{})
			if err == nil && want(r.Etcd) {
				t.Logf("the leader's GetHealth: etcd %q", r.Etcd)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the leader's GetHealth: %v %v, want etcd %s", r, err, what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	health(func(s string) bool { return s != "up" && strings.Contains(s, "quorum") }, "without quorum")
	if r := c.cli(all, "weights", "set", "nq=2"); r.code == 0 || !strings.Contains(r.stderr, "cannot be written") {
		t.Errorf("gearbox weights set without etcd's quorum: %s, want refused", r)
	}
	if r := launch("back"); r.code == 0 || !strings.Contains(r.stderr, "cannot be written") {
		t.Errorf("task launch while the leader knows etcd without quorum: %s, want refused", r)
	}
	if r := c.cli(all, "tasks"); r.code != 0 || !strings.Contains(r.stdout, "one-down") {
		t.Errorf("gearbox tasks without etcd's quorum (from the leader's memory): %s", r)
	}

	for _, i := range []int{1, 2} {
		if err := c.etcd.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := c.etcd.WaitHealthy(i, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	health(func(s string) bool { return s == "up" }, "up")
	// The same ID as a launch refused while the leader knew etcd down:
	// that refusal left nothing behind.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = launch("back")
		if r.code == 0 {
			break
		}
		t.Logf("task launch after etcd's quorum came back: %s", strings.TrimSpace(r.stderr))
		if time.Now().After(deadline) {
			t.Fatalf("task launch after etcd's quorum came back: %s", r)
		}
		time.Sleep(500 * time.Millisecond)
	}
	leader = c.leader()
	waitTaskState(t, c.masters[leader], "back", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	waitTaskState(t, c.masters[leader], "one-down", typesv1.TaskState_TASK_RUNNING, 10*time.Second)
	tasks, _ := c.etcdTasks()
	if tk, ok := tasks["no-quorum"]; ok && tk.State != typesv1.TaskState_TASK_ERROR {
		t.Errorf("the launch refused without quorum is in the registry as %s, want absent or TASK_ERROR: %+v", tk.State, tk)
	}
	if _, ok := tasks["back"]; !ok {
		t.Errorf("task back is not in etcd: %v", tasks)
	}
	c.etcdRange("weights/", func(role string, v []byte, _ int64) {
		if role == "nq" {
			t.Errorf("the weight refused without quorum is in the registry: %s", v)
		}
	})
	cs, _ := c.containers()
	if cs["no-quorum"] != 0 || cs["back"] != 1 || cs["one-down"] != 1 {
		t.Errorf("containers on the agent: %v, want one of one-down and back, none of no-quorum", cs)
	}
}

// A bbolt master's registry moved into etcd with gearbox master
// migrate-store: masters on etcd then know its agents and tasks.
func TestHAMigrateStore(t *testing.T) {
	m := startMasterProc(t)
	a := startClusterAgent(t, m, "mig", "rack:r9", true)
	agentID := a.agentID(t)
	if r := m.cli("task", "launch", "--id", "moved", "--agent-id", agentID, "--cpus", "0.1", "--memory", "32m", testImage, "sleep", "600"); r.code != 0 {
		t.Fatal(r)
	}
	waitTaskState(t, m, "moved", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	m.stop(t, syscall.SIGTERM)

	c := startHA(t, haOptions{beforeMasters: func(c *haCluster) {
		cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "master", "migrate-store", "--work-dir", m.dir,
			"--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","), "--etcd-prefix", c.prefix)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gearbox master migrate-store: %v\n%s", err, out)
		}
		t.Logf("gearbox master migrate-store:\n%s", out)
		agents := c.etcdAgents()
		if ag, ok := agents[agentID]; !ok || ag.Attributes["rack"] != "r9" {
			t.Errorf("agents in etcd after the migration: %+v, want %s (rack r9)", agents, agentID)
		}
		tasks, _ := c.etcdTasks()
		if tk, ok := tasks["moved"]; !ok || tk.AgentID != agentID || tk.State != typesv1.TaskState_TASK_RUNNING || tk.Container == nil {
			t.Errorf("tasks in etcd after the migration: %+v, want moved, TASK_RUNNING on %s with its container spec", tasks, agentID)
		}
	}})
	leader := c.leader()
	r := c.cli([]int{0, 1, 2}, "agents", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, agentID) || !strings.Contains(r.stdout, `"rack": "r9"`) {
		t.Errorf("gearbox agents on the etcd masters: %s", r)
	}
	tk, err := c.masters[leader].c.ReconcileTasks(ctxT(t), &masterv1.ReconcileTasksRequest{TaskIds: []string{"moved"}})
	if err != nil || len(tk.Tasks) != 1 || tk.Tasks[0].AgentId != agentID || tk.Tasks[0].Image != testImage {
		t.Errorf("task moved on the etcd masters: %v %v", tk, err)
	}
}

// maxSeq is the highest seq of gearbox events -o json's lines.
func maxSeq(out string) uint64 {
	var top uint64
	for _, l := range strings.Split(out, "\n") {
		var ev struct {
			Seq uint64 `json:"seq,string"`
		}
		if json.Unmarshal([]byte(l), &ev) == nil && ev.Seq > top {
			top = ev.Seq
		}
	}
	return top
}

package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
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
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/tlsutil"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// A cluster for a test: a real master process and real agent processes on
// the harness's containerd, each agent in its own containerd namespace and
// work dir.

type masterProc struct {
	// addr is what clients dial: the unix socket of a plaintext master
	// (plaintext TCP is refused), listen for one with mutual TLS.
	addr, listen, sock string
	dir, log, metrics  string
	args               []string
	tlsEnv             []string // the CLI's, when the master serves mutual TLS
	cmd                *exec.Cmd
	done               chan error
	conn               *grpc.ClientConn
	c                  masterv1.OperatorClient
}

func startMasterProc(t *testing.T, args ...string) *masterProc {
	return startMasterWith(t, false, args...)
}

// startMasterWith starts a master; withTLS: mutual TLS with the harness's
// certificates (the master has the "agent" server certificate, clients the
// "deployer" one).
func startMasterWith(t *testing.T, withTLS bool, args ...string) *masterProc {
	t.Helper()
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	mport, _ := freePort()
	dir := t.TempDir()
	m := &masterProc{listen: fmt.Sprintf("127.0.0.1:%d", port), metrics: fmt.Sprintf("127.0.0.1:%d", mport), dir: dir, log: filepath.Join(dir, "master.log"),
		sock: filepath.Join(dir, "master.sock")}
	// Missed after 3 s without a heartbeat: a -race agent on a busy
	// machine still beats every second well within that.
	m.args = append([]string{"--socket", m.sock, "--agent-ping-timeout", "1s", "--max-agent-ping-timeouts", "3"}, args...)
	m.addr = "unix://" + m.sock
	creds := insecure.NewCredentials()
	if withTLS {
		d := h.tlsDir
		m.args = append(m.args, "--tls-cert", filepath.Join(d, "agent.crt"), "--tls-key", filepath.Join(d, "agent.key"), "--tls-client-ca", filepath.Join(d, "ca.crt"))
		m.tlsEnv = []string{"GEARBOX_TLS_CA=" + filepath.Join(d, "ca.crt"), "GEARBOX_TLS_CERT=" + filepath.Join(d, "deployer.crt"), "GEARBOX_TLS_KEY=" + filepath.Join(d, "deployer.key")}
		tc, err := tlsutil.Client(filepath.Join(d, "ca.crt"), filepath.Join(d, "deployer.crt"), filepath.Join(d, "deployer.key"))
		if err != nil {
			t.Fatal(err)
		}
		creds = credentials.NewTLS(tc)
		m.addr = m.listen
	}
	m.start(t)
	m.conn, _ = grpc.NewClient(m.addr, grpc.WithTransportCredentials(creds))
	m.c = masterv1.NewOperatorClient(m.conn)
	t.Cleanup(func() {
		m.conn.Close()
		m.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("master log:\n%s", tail(m.log, 40))
		}
	})
	m.waitHealthy(t)
	return m
}

// masterBin, when set, is the gearbox binary masters start from instead
// of this tree's (a benchmark's baseline).
var masterBin string

func (m *masterProc) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(m.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	bin := filepath.Join(h.bin, "gearbox")
	if masterBin != "" {
		bin = masterBin
	}
	m.cmd = exec.Command(bin, append([]string{"master", "--listen", m.listen, "--work-dir", m.dir, "--metrics-listen", m.metrics}, m.args...)...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	m.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	m.done = make(chan error, 1)
	go func(c *exec.Cmd, d chan error) { d <- c.Wait() }(m.cmd, m.done)
}

func (m *masterProc) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := m.c.GetHealth(ctx, &masterv1.GetHealthRequest{})
		cancel()
		if err == nil && r.Healthy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master did not become healthy: %v\n%s", err, tail(m.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (m *masterProc) stop(t *testing.T, sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	m.cmd.Process.Signal(sig)
	select {
	case <-m.done:
	case <-time.After(15 * time.Second):
		m.cmd.Process.Kill()
		<-m.done
		t.Errorf("master did not stop on %s within 15s", sig)
	}
	m.cmd = nil
}

// cli runs the CLI against this master.
func (m *masterProc) cli(args ...string) result {
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), args...)
	cmd.Env = append(append(os.Environ(), "GEARBOX_MASTER="+m.addr), m.tlsEnv...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (m *masterProc) metric(t *testing.T, name string) string {
	resp, err := http.Get("http://" + m.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

type clusterAgent struct {
	name, dir, sock, log string
	args                 []string
	cmd                  *exec.Cmd
	done                 chan error
	conn                 *grpc.ClientConn
	c                    agentv1.AgentClient
}

// startClusterAgent starts an agent registered with m; image: import the
// test image into its namespace.
func startClusterAgent(t *testing.T, m *masterProc, name, attrs string, image bool) *clusterAgent {
	t.Helper()
	return startClusterAgentWith(t, m, name, attrs, image, "")
}

// startClusterAgentWith is startClusterAgent with more of the agent's
// config (TOML, appended).
func startClusterAgentWith(t *testing.T, m *masterProc, name, attrs string, image bool, extra string) *clusterAgent {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	a := &clusterAgent{name: name, dir: dir, sock: filepath.Join(dir, "run", "agent.sock"), log: filepath.Join(dir, "agent.log")}
	cfg := fmt.Sprintf(`version = 1
containerd_address = %q
namespace = %q
work_dir = %q
run_dir = %q
listen = "unix://%s"
resources = "cpus:2;mem:1024"
attributes = %q
logger_binary = %q
master = %q
%s
%s`, h.containerd.Address, h.namespace+"-"+name, filepath.Join(dir, "work"), filepath.Join(dir, "run"), a.sock, attrs,
		filepath.Join(h.bin, "gearbox-logger"), m.addr, masterTLSConfig(m), extra)
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(filepath.Join(dir, "agent.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	a.args = []string{"agent", "--config", filepath.Join(dir, "agent.toml")}
	a.start(t)
	a.conn, _ = grpc.NewClient("unix://"+a.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	a.c = agentv1.NewAgentClient(a.conn)
	t.Cleanup(func() {
		if a.cmd != nil {
			a.cmd.Process.Signal(syscall.SIGCONT)
			removeAll(a.c, 30*time.Second)
		}
		a.conn.Close()
		a.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("agent %s log:\n%s", name, tail(a.log, 30))
		}
	})
	a.waitHealthy(t)
	if image {
		cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "image", "import", h.dockerTar)
		cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+a.sock)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("importing into agent %s: %v\n%s", name, err, out)
		}
	}
	return a
}

// clusterAgentBinary, when set, is the gearbox binary cluster agents run
// (a benchmark's, built without the race detector).
var clusterAgentBinary string

func masterTLSConfig(m *masterProc) string {
	if m.tlsEnv == nil {
		return ""
	}
	d := h.tlsDir
	return fmt.Sprintf("[master_tls]\nca = %q\ncert = %q\nkey = %q\n", filepath.Join(d, "ca.crt"), filepath.Join(d, "deployer.crt"), filepath.Join(d, "deployer.key"))
}

func (a *clusterAgent) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	bin := filepath.Join(h.bin, "gearbox")
	if clusterAgentBinary != "" {
		bin = clusterAgentBinary
	}
	a.cmd = exec.Command(bin, a.args...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.done = make(chan error, 1)
	go func(c *exec.Cmd, d chan error) { d <- c.Wait() }(a.cmd, a.done)
}

func (a *clusterAgent) waitHealthy(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := a.c.GetHealth(ctx, &agentv1.GetHealthRequest{})
		cancel()
		if err == nil && r.Healthy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s did not become healthy: %v\n%s", a.name, err, tail(a.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (a *clusterAgent) stop(sig syscall.Signal) {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Signal(sig)
	select {
	case <-a.done:
	case <-time.After(20 * time.Second):
		a.cmd.Process.Kill()
		<-a.done
	}
	a.cmd = nil
}

func (a *clusterAgent) signal(sig syscall.Signal) { a.cmd.Process.Signal(sig) }

// agentID waits until the master knows an agent by this hostname-less
// name: the ID the agent keeps in its meta/master.json.
func (a *clusterAgent) agentID(t *testing.T) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(filepath.Join(a.dir, "work", "meta", "master.json"))
		var meta struct {
			AgentID string `json:"agent_id"`
		}
		if err == nil && json.Unmarshal(data, &meta) == nil && meta.AgentID != "" {
			return meta.AgentID
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent %s did not register: %v\n%s", a.name, err, tail(a.log, 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// container finds a container of the agent by ID.
func (a *clusterAgent) container(t *testing.T, id string) (*agentv1.Container, error) {
	r, err := a.c.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
	if err != nil {
		return nil, err
	}
	for _, c := range r.Containers {
		if c.Id == id {
			return c, nil
		}
	}
	return nil, fmt.Errorf("no container %s on agent %s", id, a.name)
}

func waitTaskState(t *testing.T, m *masterProc, id string, want typesv1.TaskState, within time.Duration) *masterv1.Task {
	t.Helper()
	deadline := time.Now().Add(within)
	var last *masterv1.Task
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r, err := m.c.ReconcileTasks(ctx, &masterv1.ReconcileTasksRequest{TaskIds: []string{id}})
		cancel()
		if err == nil {
			last = r.Tasks[0]
			if last.State == want {
				return last
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s: %v (err %v), want %s within %s", id, last, err, want, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// eventLog collects a subscription's events.
type eventLog struct {
	mu     sync.Mutex
	events []*masterv1.Event
	err    error
	cancel context.CancelFunc
	done   chan struct{}
}

func subscribeEvents(t *testing.T, m *masterProc, since uint64) *eventLog {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := m.c.Subscribe(ctx, &masterv1.SubscribeRequest{Since: since})
	if err != nil {
		t.Fatal(err)
	}
	l := &eventLog{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			r, err := st.Recv()
			l.mu.Lock()
			if err != nil {
				l.err = err
				l.mu.Unlock()
				return
			}
			for _, e := range r.Events {
				if e.Type != masterv1.Event_HEARTBEAT {
					l.events = append(l.events, e)
				}
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-l.done })
	return l
}

func (l *eventLog) snapshot() []*masterv1.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*masterv1.Event(nil), l.events...)
}

// taskStates lists the states the events carried for a task, in order.
func (l *eventLog) taskStates(id string) []string {
	var out []string
	for _, e := range l.snapshot() {
		if e.Task != nil && e.Task.Id == id {
			out = append(out, e.Task.State.String())
		}
	}
	return out
}

func TestMasterLaunchKillAndRefusals(t *testing.T) {
	m := startMasterProc(t)
	events := subscribeEvents(t, m, 0)
	a1 := startClusterAgent(t, m, "a1", "rack:r1", true)
	a2 := startClusterAgent(t, m, "a2", "rack:r2", true)
	id1, id2 := a1.agentID(t), a2.agentID(t)

	// The agent goes by the master's ID.
	st, err := a1.c.GetState(ctxT(t), &agentv1.GetStateRequest{})
	if err != nil || st.AgentId != id1 {
		t.Errorf("agent a1's own state names it %q (%v), the master %q", st.GetAgentId(), err, id1)
	}
	r := m.cli("agents", "-o", "json")
	if r.code != 0 || strings.Count(r.stdout, `"AGENT_ACTIVE"`) != 2 || !strings.Contains(r.stdout, id1) || !strings.Contains(r.stdout, `"rack": "r2"`) {
		t.Fatalf("gearbox agents: %s", r)
	}

	// Placed by constraint; runs on that agent under the task's ID.
	r = m.cli("task", "launch", "--id", "web", "--constraint", "rack:r2", "--cpus", "0.5", "--memory", "64m", testImage, "sleep", "600")
	if r.code != 0 || r.stdout != "web\t"+id2+"\n" {
		t.Fatalf("task launch: %s", r)
	}
	waitTaskState(t, m, "web", typesv1.TaskState_TASK_RUNNING, 20*time.Second)
	ct, err := a2.container(t, "web")
	if err != nil || ct.State != typesv1.TaskState_TASK_RUNNING {
		t.Fatalf("container of task web on agent a2: %v %v", ct, err)
	}
	// Exit codes and launch failures come back as states and reasons.
	if r := m.cli("task", "launch", "--id", "fails", "--agent-id", id1, testImage, "sh", "-c", "exit 3"); r.code != 0 {
		t.Fatal(r)
	}
	tk := waitTaskState(t, m, "fails", typesv1.TaskState_TASK_FAILED, 20*time.Second)
	if tk.GetExitCode() != 3 || tk.Reason != typesv1.Reason_REASON_COMMAND_EXITED || tk.AgentId != id1 {
		t.Errorf("task fails: %v", tk)
	}
	if r := m.cli("task", "launch", "--id", "nocmd", "--agent-id", id1, testImage, "/no/such/binary"); r.code != 0 {
		t.Fatal(r)
	}
	tk = waitTaskState(t, m, "nocmd", typesv1.TaskState_TASK_FAILED, 20*time.Second)
	if tk.Reason != typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED || !strings.Contains(tk.Message, "/no/such/binary") {
		t.Errorf("task nocmd: %v", tk)
	}
	if r := m.cli("task", "kill", "web"); r.code != 0 {
		t.Fatal(r)
	}
	tk = waitTaskState(t, m, "web", typesv1.TaskState_TASK_KILLED, 20*time.Second)
	if tk.Reason != typesv1.Reason_REASON_TASK_KILLED {
		t.Errorf("killed task: %v", tk)
	}

	// Refusals, each with what to do.
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"task", "launch", "--agent-id", "agent-nosuch", testImage}, []string{`no agent "agent-nosuch"`}},
		{[]string{"task", "launch", "--cpus", "64", testImage}, []string{"no agent has 64 cpus free", id1 + " (", id2 + " (", "free of 2 cpus, 1.0 GiB memory, "}},
		{[]string{"task", "launch", "--memory", "3g", "--constraint", "rack:r1", testImage}, []string{"no agent has 3.0 GiB memory free", id1, "has 2 cpus, 1.0 GiB memory, ", " GiB disk free"}},
		{[]string{"task", "launch", "--constraint", "rack", testImage}, []string{`constraint "rack": write ATTRIBUTE:VALUE`}},
		{[]string{"task", "launch", "--cpus", "1.5abc", testImage}, []string{`--cpus "1.5abc": give a positive number`}},
		{[]string{"task", "launch", "--constraint", "rack:r9", testImage}, []string{"no active agent has attributes rack:r9"}},
		{[]string{"task", "launch", "--id", "web", testImage}, []string{`task "web" exists`, "pick another"}},
		{[]string{"task", "kill", "web"}, []string{"already ended: TASK_KILLED"}},
		{[]string{"task", "kill", "nosuch"}, []string{`no task "nosuch"`}},
		{[]string{"agent", "mark-gone", "agent-nosuch"}, []string{`no agent "agent-nosuch"`}},
		{[]string{"events", "--since", "999999"}, []string{"there is no event 999999 yet"}},
	} {
		r := m.cli(tc.args...)
		if r.code != 125 {
			t.Errorf("%v: want exit 125, %s", tc.args, r)
		}
		for _, w := range tc.want {
			if !strings.Contains(r.stderr, w) {
				t.Errorf("%v: stderr lacks %q: %s", tc.args, w, r.stderr)
			}
		}
	}
	// The task label is the master's: a container launched on an agent
	// directly cannot pose as a task.
	if r := h.cli("run", "--rm", "-l", "gearbox.task=true", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "reserved for tasks the master launches") {
		t.Errorf("run with the task label: %s", r)
	}
	rec, err := m.c.ReconcileTasks(ctxT(t), &masterv1.ReconcileTasksRequest{TaskIds: []string{"web", "never"}})
	if err != nil || rec.Tasks[0].State != typesv1.TaskState_TASK_KILLED || rec.Tasks[1].State != typesv1.TaskState_TASK_UNKNOWN {
		t.Errorf("reconcile: %v %v", rec, err)
	}
	r = m.cli("tasks")
	for _, w := range []string{"web", "TASK_KILLED", "fails", "TASK_FAILED", "COMMAND_EXITED", "nocmd", "CONTAINER_LAUNCH_FAILED"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("gearbox tasks lacks %q:\n%s", w, r.stdout)
		}
	}

	// gearbox events: the snapshot, then events, as text and as JSON lines.
	for _, args := range [][]string{{"events"}, {"events", "-o", "json"}} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // a follow: ends at the timeout
		cmd := exec.CommandContext(ctx, filepath.Join(h.bin, "gearbox"), args...)
		cmd.Env = append(os.Environ(), "GEARBOX_MASTER="+m.addr)
		out, _ := cmd.Output()
		cancel()
		want := []string{"SUBSCRIBED\t2 agents, 3 tasks", "task web on " + id2 + " TASK_KILLED"}
		if len(args) > 1 {
			want = []string{`"type":"SUBSCRIBED"`, `"id":"web"`}
		}
		for _, w := range want {
			if !strings.Contains(string(out), w) {
				t.Errorf("gearbox %v lacks %q:\n%s", args, w, out)
			}
		}
	}
	// The subscriber saw the snapshot, then every event in order.
	evs := events.snapshot()
	if len(evs) == 0 || evs[0].Type != masterv1.Event_SUBSCRIBED {
		t.Fatalf("first event: %v", evs)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq != evs[i-1].Seq+1 {
			t.Fatalf("events out of order or with a gap: %d after %d", evs[i].Seq, evs[i-1].Seq)
		}
	}
	if got := strings.Join(events.taskStates("web"), " "); got != "TASK_STAGING TASK_STARTING TASK_RUNNING TASK_KILLED" &&
		got != "TASK_STAGING TASK_RUNNING TASK_KILLED" {
		t.Errorf("events of task web: %s", got)
	}
	added := 0
	for _, e := range evs {
		if e.Type == masterv1.Event_AGENT_ADDED {
			added++
		}
	}
	if added != 2 {
		t.Errorf("%d AGENT_ADDED events, want 2", added)
	}
	// A new subscriber resumes after the last event it saw, without a gap.
	events.cancel()
	<-events.done
	last := evs[len(evs)-1].Seq
	if r := m.cli("task", "launch", "--id", "late", testImage, "true"); r.code != 0 {
		t.Fatal(r)
	}
	waitTaskState(t, m, "late", typesv1.TaskState_TASK_FINISHED, 20*time.Second)
	resumed := subscribeEvents(t, m, last)
	deadline := time.Now().Add(30 * time.Second)
	for len(resumed.taskStates("late")) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rev := resumed.snapshot()
	if len(rev) == 0 || rev[0].Seq != last+1 || rev[0].Type != masterv1.Event_TASK_ADDED || rev[0].Task.Id != "late" {
		t.Fatalf("resumed events: %v", rev)
	}
	if st := resumed.taskStates("late"); st[len(st)-1] != "TASK_FINISHED" {
		t.Errorf("resumed events of task late: %v", st)
	}
}

func TestMasterPartitionAndRestart(t *testing.T) {
	m := startMasterProc(t)
	a1 := startClusterAgent(t, m, "p1", "rack:r1", true)
	id1 := a1.agentID(t)
	for _, args := range [][]string{
		{"--id", "pa", "--agent-id", id1, testImage, "sleep", "600"},
		{"--id", "npa", "--partition-aware=false", "--agent-id", id1, testImage, "sleep", "600"},
	} {
		if r := m.cli(append([]string{"task", "launch"}, args...)...); r.code != 0 {
			t.Fatal(r)
		}
	}
	waitTaskState(t, m, "pa", typesv1.TaskState_TASK_RUNNING, 20*time.Second)
	waitTaskState(t, m, "npa", typesv1.TaskState_TASK_RUNNING, 20*time.Second)
	before, err := a1.container(t, "pa")
	if err != nil {
		t.Fatal(err)
	}

	// Stopped: unreachable after 3 × 1 s without a heartbeat.
	a1.signal(syscall.SIGSTOP)
	// How soon is for make bench; here, that it happens.
	tk := waitTaskState(t, m, "pa", typesv1.TaskState_TASK_UNREACHABLE, 30*time.Second)
	if tk.Reason != typesv1.Reason_REASON_AGENT_DISCONNECTED || !strings.Contains(tk.Message, "no heartbeat") {
		t.Errorf("unreachable task: %v", tk)
	}
	waitTaskState(t, m, "npa", typesv1.TaskState_TASK_LOST, 30*time.Second)
	if r := m.cli("agents"); !strings.Contains(r.stdout, "UNREACHABLE") {
		t.Errorf("agents while stopped:\n%s", r.stdout)
	}
	// Back: reconciled to the truth, not launched again.
	a1.signal(syscall.SIGCONT)
	waitTaskState(t, m, "pa", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	waitTaskState(t, m, "npa", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	cs, err := a1.c.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
	if err != nil || len(cs.Containers) != 2 {
		t.Fatalf("containers on the agent after the partition: %v %v", cs, err)
	}
	after, _ := a1.container(t, "pa")
	if after.GetPid() != before.GetPid() {
		t.Errorf("task pa runs as pid %d, was %d: started again", after.GetPid(), before.GetPid())
	}

	// The master dies; meanwhile a task ends on the agent. After the
	// restart the agent registers again and the update arrives: nothing is
	// lost.
	m.stop(t, syscall.SIGKILL)
	if _, err := a1.c.KillContainer(ctxT(t), &agentv1.KillContainerRequest{ContainerId: "npa"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a1.c.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "npa"}); err != nil {
		t.Fatal(err)
	}
	pending, _ := filepath.Glob(filepath.Join(a1.dir, "work", "meta", "updates", "*.json"))
	if len(pending) == 0 {
		t.Error("the agent checkpointed no status update while the master was down")
	}
	if st, err := a1.c.GetState(ctxT(t), &agentv1.GetStateRequest{}); err != nil || st.MasterConnected || st.PendingStatusUpdates == 0 || st.Master != m.addr {
		t.Errorf("agent state while the master is down: %v %v", st, err)
	}
	m.start(t)
	m.waitHealthy(t)
	waitTaskState(t, m, "npa", typesv1.TaskState_TASK_KILLED, 30*time.Second)
	waitTaskState(t, m, "pa", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	r := m.cli("agents", "-o", "json")
	if !strings.Contains(r.stdout, id1) || !strings.Contains(r.stdout, "AGENT_ACTIVE") {
		t.Errorf("agents after the master's restart: %s", r)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		pending, _ = filepath.Glob(filepath.Join(a1.dir, "work", "meta", "updates", "*.json"))
		st, _ := a1.c.GetState(ctxT(t), &agentv1.GetStateRequest{})
		if len(pending) == 0 && st.GetMasterConnected() && st.GetPendingStatusUpdates() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status updates still unacknowledged: %v", pending)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The agent restarts (SIGKILL): it keeps its ID and its task.
	a1.stop(syscall.SIGKILL)
	a1.start(t)
	a1.waitHealthy(t)
	if id := a1.agentID(t); id != id1 {
		t.Errorf("agent ID after a restart: %s, was %s", id, id1)
	}
	time.Sleep(time.Second)
	waitTaskState(t, m, "pa", typesv1.TaskState_TASK_RUNNING, 30*time.Second)
	if r := m.cli("agents"); strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("agents after the agent's restart (one, not two):\n%s", r.stdout)
	}
}

func TestMasterRemovalRateLimit(t *testing.T) {
	m := startMasterProc(t, "--agent-removal-rate-limit", "1/2secs", "--agent-ping-timeout", "500ms", "--max-agent-ping-timeouts", "3")
	var agents []*clusterAgent
	for i := range 5 {
		agents = append(agents, startClusterAgent(t, m, fmt.Sprintf("r%d", i), "", false))
	}
	for _, a := range agents {
		a.agentID(t)
	}
	events := subscribeEvents(t, m, 0)
	for _, a := range agents {
		a.signal(syscall.SIGSTOP)
	}
	start := time.Now()
	// All five are missed within about 1.5 s and leave the queue one per
	// 2 s: several wait in it, for seconds.
	for q := ""; ; time.Sleep(50 * time.Millisecond) {
		if q = m.metric(t, "gearbox_master_unreachable_queue"); q >= "2" && q <= "5" && len(q) == 1 {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("removal queue %q 30s after five agents stopped, want 2-5 waiting", q)
		}
	}
	var removed []time.Time
	deadline := time.Now().Add(60 * time.Second)
	for len(removed) < 5 && time.Now().Before(deadline) {
		removed = removed[:0]
		for _, e := range events.snapshot() {
			if e.Type == masterv1.Event_AGENT_REMOVED {
				removed = append(removed, e.Time.AsTime())
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(removed) != 5 {
		t.Fatalf("%d agents marked unreachable, want 5", len(removed))
	}
	t.Logf("marked unreachable at %v after the stop", func() (out []time.Duration) {
		for _, r := range removed {
			out = append(out, r.Sub(start).Round(10*time.Millisecond))
		}
		return
	}())
	// No faster than 1/2secs: four intervals take 8 s from the first removal's
	// turn (it may be stamped late, hence 7 s), and no two come close
	// together. How close to 2 s each gap is belongs to make bench.
	if all := removed[4].Sub(removed[0]); all < 7*time.Second {
		t.Errorf("five removals within %s, want at least 8s at 1/2secs", all)
	}
	for i := 1; i < 5; i++ {
		if gap := removed[i].Sub(removed[i-1]); gap < time.Second {
			t.Errorf("agent %d marked %s after the previous, want about 2s", i, gap)
		}
	}
	for _, a := range agents {
		a.signal(syscall.SIGCONT)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		r, err := m.c.GetHealth(ctxT(t), &masterv1.GetHealthRequest{})
		if err == nil && r.AgentsActive == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents back after SIGCONT: %v %v", r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMasterMarkAgentGone(t *testing.T) {
	m := startMasterProc(t)
	a := startClusterAgent(t, m, "g1", "", true)
	id := a.agentID(t)
	if r := m.cli("task", "launch", "--id", "doomed", testImage, "sleep", "600"); r.code != 0 {
		t.Fatal(r)
	}
	waitTaskState(t, m, "doomed", typesv1.TaskState_TASK_RUNNING, 20*time.Second)
	if r := m.cli("agent", "mark-gone", id); r.code != 0 || r.stdout != id+"\n" {
		t.Fatal(r)
	}
	tk := waitTaskState(t, m, "doomed", typesv1.TaskState_TASK_GONE_BY_OPERATOR, 30*time.Second)
	if tk.Reason != typesv1.Reason_REASON_AGENT_REMOVED {
		t.Errorf("task of a gone agent: %v", tk)
	}
	// The agent is told, kills its task and stays away, also after a restart.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := a.container(t, "doomed")
		if err == nil && c.State == typesv1.TaskState_TASK_KILLED {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task's container on the gone agent: %v %v", c, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	a.stop(syscall.SIGTERM)
	a.start(t)
	a.waitHealthy(t)
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(tail(a.log, 5), "marked gone") {
		if time.Now().After(deadline) {
			t.Fatalf("restarted agent's log does not say it was refused:\n%s", tail(a.log, 10))
		}
		time.Sleep(50 * time.Millisecond)
	}
	info := exec.Command(filepath.Join(h.bin, "gearbox"), "info")
	info.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+a.sock)
	if out, err := info.CombinedOutput(); err != nil || !strings.Contains(string(out), "REFUSED: agent "+id+" was marked gone by an operator") {
		t.Errorf("gearbox info on the refused agent: %v\n%s", err, out)
	}
	r := m.cli("agents")
	if !strings.Contains(r.stdout, "GONE (by operator)") || strings.Contains(r.stdout, "ACTIVE") {
		t.Errorf("agents:\n%s", r.stdout)
	}
	if r := m.cli("agent", "mark-gone", id); r.code != 0 {
		t.Errorf("marking it gone again: %s", r)
	}
}

func TestMasterMutualTLS(t *testing.T) {
	m := startMasterWith(t, true, "--agent-cn", "deployer", "--operator-cn", "deployer", "--readonly-cn", "viewer")
	a := startClusterAgent(t, m, "tls1", "", false)
	id := a.agentID(t)
	if r := m.cli("agents", "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("agents over mutual TLS: %s", r)
	}
	// Without a client certificate: refused, and told why.
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "agents")
	cmd.Env = append(os.Environ(), "GEARBOX_MASTER="+m.addr)
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--tls-ca, --tls-cert, --tls-key") {
		t.Errorf("agents without TLS: %v\n%s", err, out)
	}
	// A certificate of another CA: refused.
	d := h.tlsDir
	cmd = exec.Command(filepath.Join(h.bin, "gearbox"), "agents")
	cmd.Env = append(os.Environ(), "GEARBOX_MASTER="+m.addr, "GEARBOX_TLS_CA="+filepath.Join(d, "ca.crt"),
		"GEARBOX_TLS_CERT="+filepath.Join(d, "intruder.crt"), "GEARBOX_TLS_KEY="+filepath.Join(d, "intruder.key"))
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("agents with a certificate of another CA: %s", out)
	}
	// Roles by certificate: the viewer reads, and may neither launch nor
	// register as an agent.
	viewer := append(os.Environ(), "GEARBOX_MASTER="+m.addr, "GEARBOX_TLS_CA="+filepath.Join(d, "ca.crt"),
		"GEARBOX_TLS_CERT="+filepath.Join(d, "viewer.crt"), "GEARBOX_TLS_KEY="+filepath.Join(d, "viewer.key"))
	cmd = exec.Command(filepath.Join(h.bin, "gearbox"), "tasks")
	cmd.Env = viewer
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("tasks as viewer: %v\n%s", err, out)
	}
	cmd = exec.Command(filepath.Join(h.bin, "gearbox"), "task", "launch", testImage)
	cmd.Env = viewer
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), `LaunchTask needs the operator role; certificate "viewer" has readonly role`) {
		t.Errorf("task launch as viewer: %v\n%s", err, out)
	}
	tc, _ := tlsutil.Client(filepath.Join(d, "ca.crt"), filepath.Join(d, "viewer.crt"), filepath.Join(d, "viewer.key"))
	vc, _ := grpc.NewClient(m.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	defer vc.Close()
	st, err := masterv1.NewAgentGatewayClient(vc).Connect(ctxT(t))
	if err == nil {
		st.Send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Register{Register: &masterv1.Register{Hostname: "rogue"}}})
		_, err = st.Recv()
	}
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "--agent-cn") {
		t.Errorf("registering with the viewer's certificate: %v", err)
	}
	// An agent ID stays with the certificate that registered it.
	m2 := startMasterWith(t, true, "--agent-cn", "deployer", "--agent-cn", "viewer", "--readonly-cn", "deployer")
	register := func(cert, agentID string) (string, error) {
		tc, _ := tlsutil.Client(filepath.Join(d, "ca.crt"), filepath.Join(d, cert+".crt"), filepath.Join(d, cert+".key"))
		cc, _ := grpc.NewClient(m2.addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		defer cc.Close()
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		st, err := masterv1.NewAgentGatewayClient(cc).Connect(ctx)
		if err != nil {
			return "", err
		}
		st.Send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Register{Register: &masterv1.Register{AgentId: agentID, Hostname: cert}}})
		r, err := st.Recv()
		return r.GetRegistered().GetAgentId(), err
	}
	first, err := register("deployer", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := register("viewer", first); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `registered with certificate "deployer"`) {
		t.Errorf("another certificate under agent ID %s: %v", first, err)
	}
	if again, err := register("deployer", first); err != nil || again != first {
		t.Errorf("the same certificate again: %s %v", again, err)
	}
	// Plaintext on an address other hosts reach is refused at start.
	cmd = exec.Command(filepath.Join(h.bin, "gearbox"), "master", "--listen", "0.0.0.0:0", "--work-dir", t.TempDir())
	out, err = cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 125 || !strings.Contains(string(out), "reachable from other hosts") {
		t.Errorf("plaintext master on 0.0.0.0: %v\n%s", err, out)
	}
}

// Issue 12, item 9, as a new user tried it: a local container "db", then a
// task "db" through the master, then a kill of the task. The task ends
// TASK_FAILED saying why, and the local container is left alone.
func TestMasterTaskCollidesWithLocalContainer(t *testing.T) {
	m := startMasterProc(t)
	a := startClusterAgent(t, m, "coll", "", true)
	agentID := a.agentID(t)
	local := func(args ...string) result {
		cmd := exec.Command(filepath.Join(h.bin, "gearbox"), args...)
		cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+a.sock)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		return result{stdout: out.String(), stderr: errb.String(), code: code}
	}
	if r := local("run", "-d", "--name", "db", testImage, "sleep", "600"); r.code != 0 {
		t.Fatalf("gearbox run -d --name db: %s", r)
	}
	before, err := a.container(t, "db")
	if err != nil || before.State != typesv1.TaskState_TASK_RUNNING {
		t.Fatalf("local container db: %v %v", before, err)
	}
	if r := m.cli("task", "launch", "--id", "db", "--agent-id", agentID, testImage, "sleep", "600"); r.code != 0 {
		t.Fatalf("task launch --id db: %s", r)
	}
	tk := waitTaskState(t, m, "db", typesv1.TaskState_TASK_FAILED, 20*time.Second)
	if tk.Reason != typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED || !strings.Contains(tk.Message, "container named db") ||
		!strings.Contains(tk.Message, "not this task's") {
		t.Errorf("task db: %v, want TASK_FAILED REASON_CONTAINER_LAUNCH_FAILED naming the local container", tk)
	}
	// The master says the task has ended; whatever it answers, the local
	// container must not be touched.
	r := m.cli("task", "kill", "db")
	if r.code != 0 && !strings.Contains(r.stderr, "already ended") {
		t.Errorf("task kill db: %s", r)
	}
	time.Sleep(time.Second) // a kill, had one been sent, would have landed
	after, err := a.container(t, "db")
	if err != nil || after.State != typesv1.TaskState_TASK_RUNNING || after.Pid != before.Pid || after.Labels["gearbox.task"] != "" {
		t.Errorf("local container db after the task's launch and kill: %v %v, want it running as before (pid %d)", after, err, before.Pid)
	}
	if syscall.Kill(int(before.Pid), 0) != nil {
		t.Errorf("the local container's process %d is gone", before.Pid)
	}
	if tk := waitTaskState(t, m, "db", typesv1.TaskState_TASK_FAILED, 5*time.Second); tk.Reason != typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED {
		t.Errorf("task db after the kill: %v", tk)
	}
}

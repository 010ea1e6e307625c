package integration

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func launchRestart(t *testing.T, id string, p *typesv1.RestartPolicy, res *agentv1.Resources, args ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: args}, Resources: res, RestartPolicy: p,
	})
	if err != nil {
		t.Fatalf("launch %s: %v", id, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

// waitUntil polls a container until ok says so.
func waitUntil(t *testing.T, id string, within time.Duration, what string, ok func(*agentv1.Container) bool) *agentv1.Container {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		resp, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
		if err == nil {
			for _, c := range resp.Containers {
				if c.Id == id && ok(c) {
					return c
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not %s within %s", id, what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sandboxLines reads a file the container wrote to its sandbox.
func sandboxLines(t *testing.T, c *agentv1.Container, name string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Sandbox, name))
	if err != nil {
		t.Fatalf("reading %s of %s: %v", name, c.Id, err)
	}
	return strings.Fields(strings.TrimSpace(string(b)))
}

// uptimes reads the first field of each /proc/uptime line a container
// appended at each start (the host's clock: no time namespace).
func uptimes(t *testing.T, c *agentv1.Container) []float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.Sandbox, "starts"))
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("starts: %q", line)
		}
		out = append(out, v)
	}
	return out
}

const logStart = "cat /proc/uptime >> /mnt/sandbox/starts; "

// on-failure:3 with a process exiting 1: three restarts with growing
// delays, then the container stays failed, with its last exit; the same
// container and sandbox throughout.
func TestRestartOnFailureBacksOff(t *testing.T) {
	p := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ON_FAILURE, MaxRetries: 3, Delay: durationpb.New(400 * time.Millisecond)}
	c := launchRestart(t, "flaky", p, nil, "sh", "-c", logStart+"exit 1")
	w := waitExit(t, "flaky", time.Minute)
	if w.State != typesv1.TaskState_TASK_FAILED || w.GetExitCode() != 1 || w.RestartCount != 3 {
		t.Fatalf("after the last restart: %v exit %d, %d restarts (want TASK_FAILED, 1, 3): %s", w.State, w.GetExitCode(), w.RestartCount, w.Message)
	}
	if !strings.Contains(w.Message, "gave up after 3 restarts") || w.LastExit.GetExitCode() != 1 {
		t.Errorf("message %q, last exit %v", w.Message, w.LastExit)
	}
	starts := uptimes(t, c)
	if len(starts) != 4 {
		t.Fatalf("%d starts in the sandbox, want 4 (the sandbox is kept across restarts): %v", len(starts), starts)
	}
	var gaps []float64
	for i := 1; i < len(starts); i++ {
		gaps = append(gaps, starts[i]-starts[i-1])
	}
	t.Logf("gaps between starts: %v (back-off 0.4s, 0.8s, 1.6s)", gaps)
	for i, want := range []float64{0.4, 0.8, 1.6} {
		if gaps[i] < want*0.95 {
			t.Errorf("restart %d came %.2fs after the start before, sooner than its back-off %.1fs", i+1, gaps[i], want)
		}
	}
	if gaps[2] <= gaps[0] {
		t.Errorf("the back-off did not grow: %v", gaps)
	}
	if st := h.cli("inspect", "flaky"); !strings.Contains(st.stdout, "on-failure:3") || !strings.Contains(st.stdout, "Restart count:") ||
		!strings.Contains(st.stdout, "exit code 1") {
		t.Errorf("inspect:\n%s", st.stdout)
	}
}

// always restarts after exit 0; a kill ends it for good. unless-stopped
// does not restart after a kill, not across an agent restart either.
func TestRestartAlwaysAndKill(t *testing.T) {
	always := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ALWAYS, Delay: durationpb.New(100 * time.Millisecond)}
	c := launchRestart(t, "again", always, nil, "sh", "-c", logStart+"sleep 0.3; exit 0")
	waitUntil(t, "again", 30*time.Second, "restarted twice", func(c *agentv1.Container) bool {
		return c.RestartCount >= 2 && c.State == typesv1.TaskState_TASK_RUNNING
	})
	if r := h.cli("kill", "again"); r.code != 0 {
		t.Fatal(r)
	}
	w := waitExit(t, "again", 30*time.Second)
	if w.State != typesv1.TaskState_TASK_KILLED {
		t.Fatalf("always after kill: %v %s", w.State, w.Message)
	}
	n := len(uptimes(t, c))
	time.Sleep(time.Second)
	if m := len(uptimes(t, c)); m != n || inspect(t, "again").State != typesv1.TaskState_TASK_KILLED {
		t.Errorf("restarted after a kill: %d starts, then %d", n, m)
	}

	unless := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_UNLESS_STOPPED, Delay: durationpb.New(100 * time.Millisecond)}
	launchRestart(t, "steady", unless, nil, "sleep", "300")
	if r := h.cli("kill", "steady"); r.code != 0 {
		t.Fatal(r)
	}
	if w := waitExit(t, "steady", 30*time.Second); w.State != typesv1.TaskState_TASK_KILLED || w.RestartCount != 0 {
		t.Fatalf("unless-stopped after kill: %v, %d restarts", w.State, w.RestartCount)
	}
	restartAgent(t, syscall.SIGTERM)
	time.Sleep(500 * time.Millisecond)
	if c := inspect(t, "steady"); c.State != typesv1.TaskState_TASK_KILLED || c.RestartCount != 0 {
		t.Errorf("unless-stopped after kill and an agent restart: %v, %d restarts", c.State, c.RestartCount)
	}
}

// A container waiting for its back-off shows as Restarting in ps; a kill
// then ends it, with the last exit's status.
func TestRestartKillDuringBackoff(t *testing.T) {
	p := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ON_FAILURE, Delay: durationpb.New(time.Minute)}
	launchRestart(t, "waiting", p, nil, "sh", "-c", "exit 3")
	c := waitUntil(t, "waiting", 30*time.Second, "waiting to restart", func(c *agentv1.Container) bool { return c.NextRestartAt != nil })
	if c.State != typesv1.TaskState_TASK_STARTING || c.LastExit.GetExitCode() != 3 || !strings.Contains(c.Message, "exited with status 3; restarting (restart 1)") {
		t.Errorf("waiting: %v, last exit %v, %q", c.State, c.LastExit, c.Message)
	}
	if r := h.cli("ps"); !strings.Contains(r.stdout, "Restarting (3)") {
		t.Errorf("ps does not show it restarting:\n%s", r.stdout)
	}
	if r := h.cli("kill", "waiting"); r.code != 0 {
		t.Fatal(r)
	}
	w := waitExit(t, "waiting", 10*time.Second)
	if w.State != typesv1.TaskState_TASK_KILLED || w.GetExitCode() != 3 || w.NextRestartAt != nil || w.RestartCount != 0 {
		t.Errorf("killed during its back-off: %v exit %d, next %v, %d restarts: %s", w.State, w.GetExitCode(), w.NextRestartAt, w.RestartCount, w.Message)
	}
}

// An agent SIGKILLed while a restart waits keeps the count, the back-off and
// the time of the restart; the sandbox written before the crash stays.
func TestRestartSurvivesAgentSIGKILL(t *testing.T) {
	p := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ON_FAILURE, MaxRetries: 5, Delay: durationpb.New(3 * time.Second)}
	c := launchRestart(t, "durable", p, nil, "sh", "-c", logStart+"exit 1")
	before := waitUntil(t, "durable", 30*time.Second, "waiting to restart", func(c *agentv1.Container) bool { return c.NextRestartAt != nil })
	restartAgent(t, syscall.SIGKILL)
	after := inspect(t, "durable")
	if after.State != typesv1.TaskState_TASK_STARTING || !after.NextRestartAt.AsTime().Equal(before.NextRestartAt.AsTime()) || after.RestartCount != 0 {
		t.Fatalf("after the agent's SIGKILL: %v, next restart %v (was %v), %d restarts", after.State, after.NextRestartAt.AsTime(), before.NextRestartAt.AsTime(), after.RestartCount)
	}
	ran := waitUntil(t, "durable", 30*time.Second, "restarted", func(c *agentv1.Container) bool { return c.RestartCount == 1 })
	if ran.StartedAt != nil && ran.StartedAt.AsTime().Before(before.NextRestartAt.AsTime().Add(-50*time.Millisecond)) {
		t.Errorf("restarted at %v, before its time %v", ran.StartedAt.AsTime(), before.NextRestartAt.AsTime())
	}
	// The next back-off is twice the first: it went on from the checkpoint.
	second := waitUntil(t, "durable", 30*time.Second, "waiting for its second restart", func(c *agentv1.Container) bool {
		return c.RestartCount == 1 && c.NextRestartAt != nil
	})
	// Measured from the exit, which the back-off follows once the exit is
	// recorded: at least 6s, and nowhere near the third (12s).
	if d := second.NextRestartAt.AsTime().Sub(second.LastExit.Time.AsTime()); d < 6*time.Second || d > 11*time.Second {
		t.Errorf("second back-off %v after the exit, want 6s (3s doubled) and some", d)
	}
	if n := len(uptimes(t, c)); n != 2 {
		t.Errorf("%d starts in the sandbox, want 2 (the one before the crash kept)", n)
	}
	if c.Id != second.Id || c.Sandbox != second.Sandbox {
		t.Errorf("the restart changed the container: %s %s → %s %s", c.Id, c.Sandbox, second.Id, second.Sandbox)
	}
}

// An OOM kill is restarted by on-failure and keeps its memory reason, in
// the last exit while it restarts and in the final end.
func TestRestartAfterOOM(t *testing.T) {
	p := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ON_FAILURE, MaxRetries: 1, Delay: durationpb.New(500 * time.Millisecond)}
	c := launchRestart(t, "oom-again", p, &agentv1.Resources{Memory: 32 << 20}, "sh", "-c", logStart+allocate64M)
	waiting := waitUntil(t, "oom-again", 30*time.Second, "waiting to restart", func(c *agentv1.Container) bool { return c.NextRestartAt != nil })
	if waiting.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY || waiting.LastExit.GetReason() != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY {
		t.Errorf("restarting after an OOM kill: reason %v, last exit %v", waiting.Reason, waiting.LastExit)
	}
	w := waitExit(t, "oom-again", time.Minute)
	if w.State != typesv1.TaskState_TASK_FAILED || w.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY || w.RestartCount != 1 ||
		w.LastExit.GetReason() != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY {
		t.Errorf("after the restart: %v %v, %d restarts, last exit %v: %s", w.State, w.Reason, w.RestartCount, w.LastExit, w.Message)
	}
	if n := len(uptimes(t, c)); n != 2 {
		t.Errorf("%d starts, want 2", n)
	}
}

// Bad restart definitions are refused at launch, naming the field.
func TestRestartPolicyValidation(t *testing.T) {
	for _, tc := range []struct {
		p     *typesv1.RestartPolicy
		rm    bool
		inMsg string
	}{
		{&typesv1.RestartPolicy{Mode: 9}, false, "restart_policy.mode"},
		{&typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ON_FAILURE, MaxRetries: -1}, false, "restart_policy.max_retries"},
		{&typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ALWAYS, MaxRetries: 2}, false, "restart_policy.max_retries"},
		{&typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ALWAYS, Factor: 0.5}, false, "restart_policy.factor"},
		{&typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ALWAYS, Delay: durationpb.New(-time.Second)}, false, "restart_policy.delay"},
		{&typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ALWAYS}, true, "auto_remove"},
	} {
		_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
			ContainerId: "badrestart", Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}, RestartPolicy: tc.p, AutoRemove: tc.rm,
		})
		wantCode(t, err, codes.InvalidArgument, tc.inMsg)
	}
	for _, args := range [][]string{{"--restart", "sometimes"}, {"--restart", "always:3"}, {"--restart", "on-failure:-1"}, {"--rm", "--restart", "always"}} {
		r := h.cli(append(append([]string{"run", "-d"}, args...), testImage, "true")...)
		if r.code != 125 || !strings.Contains(r.stderr, "restart") {
			t.Errorf("run %v: %s", args, r)
		}
	}
	if r := h.cli("ps", "-a"); strings.Contains(r.stdout, "badrestart") {
		t.Errorf("a refused launch left a container:\n%s", r.stdout)
	}
}

// run in the foreground with a restart policy streams the output of every
// run and exits with the final status.
func TestRunForegroundRestarts(t *testing.T) {
	t.Cleanup(func() { h.cli("rm", "-f", "fg-restart") })
	r := h.cli("run", "--name", "fg-restart", "--restart", "on-failure:2", "--restart-delay", "200ms", testImage, "sh", "-c", "echo run; exit 4")
	if r.code != 4 || strings.Count(r.stdout, "run\n") != 3 {
		t.Errorf("run --restart on-failure:2 of a command exiting 4: %s", r)
	}
	if c := inspect(t, "fg-restart"); c.RestartCount != 2 {
		t.Errorf("%d restarts, want 2", c.RestartCount)
	}
}

// After a reboot (the boot ID changed, the task is gone) a container whose
// policy restarts it starts again, as Docker's do when its daemon starts;
// one without a policy is gone.
func TestRestartAfterReboot(t *testing.T) {
	p := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_UNLESS_STOPPED, Delay: durationpb.New(100 * time.Millisecond)}
	c := launchRestart(t, "phoenix", p, nil, "sh", "-c", logStart+"sleep 300")
	launch(t, "ashes", "sleep", "300")
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), h.namespace)
	for _, id := range []string{"phoenix", "ashes"} {
		cont, err := h.ctrd(t).LoadContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		task, _ := cont.Task(ctx, nil)
		task.Delete(ctx, client.WithProcessKill)
	}
	meta := filepath.Join(h.workDir(), "meta", "agent.json")
	data, _ := os.ReadFile(meta)
	var m map[string]any
	json.Unmarshal(data, &m)
	m["boot_id"] = "00000000-0000-0000-0000-000000000001"
	data, _ = json.Marshal(m)
	os.WriteFile(meta, data, 0o600)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	again := waitUntil(t, "phoenix", 30*time.Second, "restarted after the reboot", func(c *agentv1.Container) bool {
		return c.State == typesv1.TaskState_TASK_RUNNING
	})
	if again.RestartCount != 1 || again.LastExit.GetReason() != typesv1.Reason_REASON_AGENT_RESTARTED {
		t.Errorf("after the reboot: %d restarts, last exit %v", again.RestartCount, again.LastExit)
	}
	if n := len(uptimes(t, c)); n != 2 {
		t.Errorf("%d starts in the sandbox, want 2", n)
	}
	if g := inspect(t, "ashes"); g.State != typesv1.TaskState_TASK_GONE {
		t.Errorf("without a policy after the reboot: %v", g.State)
	}
}

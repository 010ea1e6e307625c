package integration

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestRunPrintsOutputAndExitStatus(t *testing.T) {
	r := h.cli("run", "--rm", testImage, "echo", "hello")
	if r.code != 0 || r.stdout != "hello\n" {
		t.Fatalf("run echo hello: %s", r)
	}
	r = h.cli("run", "--rm", testImage, "sh", "-c", "echo out; echo err >&2; exit 3")
	if r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("want exit 3 with out/err split: %s", r)
	}
}

func TestRunCommandThatCannotRun(t *testing.T) {
	r := h.cli("run", "--rm", testImage, "no-such-command")
	if r.code != 127 || !strings.Contains(r.stderr, "no-such-command") {
		t.Errorf("missing command: want 127 naming it: %s", r)
	}
	r = h.cli("run", "--rm", testImage, "/etc/passwd")
	if r.code != 126 {
		t.Errorf("non-executable: want 126: %s", r)
	}
	// --rm removed the failed containers.
	ps := h.cli("ps", "-a")
	if strings.Contains(ps.stdout, "no-such-command") || strings.Contains(ps.stdout, "/etc/passwd") {
		t.Errorf("--rm left a failed container behind:\n%s", ps.stdout)
	}
}

// Every line a container writes reaches its sandbox and the foreground run,
// even when it exits right after writing.
func TestOutputIsCompleteAtExit(t *testing.T) {
	r := h.cli("run", "--rm", testImage, "sh", "-c", "seq 1 20000")
	if r.code != 0 {
		t.Fatal(r)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 20000 || lines[0] != "1" || lines[19999] != "20000" {
		t.Fatalf("got %d lines (first %q, last %q), want 1..20000", len(lines), lines[0], lines[len(lines)-1])
	}
}

func TestImageConfigAndOverrides(t *testing.T) {
	r := h.cli("run", "--rm", testImage, "sh", "-c", "pwd; id -u; echo $PATH")
	if r.code != 0 || r.stdout != "/\n0\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n" {
		t.Errorf("image defaults: %s", r)
	}
	r = h.cli("run", "--rm", "-w", "/tmp", "-u", "nobody", "-e", "GREETING=hi there", testImage, "sh", "-c", `pwd; id -u; echo "$GREETING"`)
	if r.code != 0 || r.stdout != "/tmp\n65534\nhi there\n" {
		t.Errorf("overrides: %s", r)
	}
	r = h.cli("run", "--rm", "-u", "1234:5678", testImage, "sh", "-c", "id -u; id -g")
	if r.code != 0 || r.stdout != "1234\n5678\n" {
		t.Errorf("uid:gid: %s", r)
	}
	r = h.cli("run", "--rm", "--entrypoint", "echo", testImage, "from", "entrypoint")
	if r.code != 0 || r.stdout != "from entrypoint\n" {
		t.Errorf("entrypoint override: %s", r)
	}
	// The image's cmd (sh) runs when no command is given.
	r = h.cliIn("echo from-default-cmd\n", "run", "--rm", testImage)
	if r.code != 0 {
		t.Errorf("default cmd: %s", r)
	}
}

// Both layers are applied, the whiteout in the second deletes a file of
// the first.
func TestLayersAndWhiteout(t *testing.T) {
	r := h.cli("run", "--rm", testImage, "sh", "-c", "cat /etc/gearbox-demo; test -e /etc/whiteout-me && echo still-there; exit 0")
	if r.code != 0 || r.stdout != "built by gearbox from busybox-static\n" {
		t.Fatalf("layers: %s", r)
	}
}

func TestSandbox(t *testing.T) {
	r := h.cli("run", "--name", "sandboxed", testImage, "sh", "-c", `echo "$GEARBOX_SANDBOX"; echo kept > /mnt/sandbox/artifact; echo to-stderr >&2`)
	if r.code != 0 || r.stdout != "/mnt/sandbox\n" {
		t.Fatal(r)
	}
	c := inspect(t, "sandboxed")
	for file, want := range map[string]string{"stdout": "/mnt/sandbox\n", "stderr": "to-stderr\n", "artifact": "kept\n"} {
		got, err := os.ReadFile(filepath.Join(c.Sandbox, file))
		if err != nil || string(got) != want {
			t.Errorf("sandbox %s = %q, %v; want %q", file, got, err, want)
		}
	}
	if r := h.cli("logs", "sandboxed"); r.stdout != "/mnt/sandbox\n" || r.stderr != "to-stderr\n" {
		t.Errorf("logs: %s", r)
	}
	if r := h.cli("rm", "sandboxed"); r.code != 0 {
		t.Fatal(r)
	}
	if _, err := os.Stat(c.Sandbox); !os.IsNotExist(err) {
		t.Errorf("sandbox %s survived rm: %v", c.Sandbox, err)
	}
}

func inspect(t *testing.T, id string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Containers {
		if c.Id == id {
			return c
		}
	}
	t.Fatalf("container %s not listed", id)
	return nil
}

func launch(t *testing.T, id string, args ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: args},
	})
	if err != nil {
		t.Fatalf("launch %s: %v", id, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

func TestLifecycleThroughTheAPI(t *testing.T) {
	// A process that ends on SIGTERM (PID 1 has no default handlers).
	c := launch(t, "life", "sh", "-c", `trap "exit 143" TERM; while true; do sleep 1; done`)
	if c.State != typesv1.TaskState_TASK_RUNNING || c.Pid == 0 {
		t.Fatalf("after launch: %v pid %d", c.State, c.Pid)
	}
	if err := syscall.Kill(int(c.Pid), 0); err != nil {
		t.Fatalf("process %d not running: %v", c.Pid, err)
	}
	ps := h.cli("ps")
	if !strings.Contains(ps.stdout, "life") || !strings.Contains(ps.stdout, "Up ") {
		t.Errorf("ps:\n%s", ps.stdout)
	}
	// Remove without force refuses and leaves it running.
	_, err := h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "life"})
	wantCode(t, err, codes.FailedPrecondition, "running")
	if syscall.Kill(int(c.Pid), 0) != nil {
		t.Fatal("refused removal damaged the container")
	}
	if _, err := h.client.KillContainer(ctxT(t), &agentv1.KillContainerRequest{ContainerId: "life", Signal: "TERM"}); err != nil {
		t.Fatal(err)
	}
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "life"})
	if err != nil {
		t.Fatal(err)
	}
	if w.Container.State != typesv1.TaskState_TASK_KILLED || w.Container.Reason != typesv1.Reason_REASON_TASK_KILLED ||
		w.Container.GetExitCode() != 128+int32(syscall.SIGTERM) || w.Container.FinishedAt == nil {
		t.Errorf("after kill: %v %v exit %d", w.Container.State, w.Container.Reason, w.Container.GetExitCode())
	}
	// Killing a terminal container is refused.
	_, err = h.client.KillContainer(ctxT(t), &agentv1.KillContainerRequest{ContainerId: "life"})
	wantCode(t, err, codes.FailedPrecondition, "not running")
	if _, err := h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "life"}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "life"})
	wantCode(t, err, codes.NotFound, "life")
}

// A signal the process ignores is followed by SIGKILL after the grace period.
func TestKillGracePeriodEscalates(t *testing.T) {
	launch(t, "stubborn", "sh", "-c", `trap "" TERM; echo ready; while true; do sleep 1; done`)
	waitForOutput(t, "stubborn", "ready")
	start := time.Now()
	if _, err := h.client.KillContainer(ctxT(t), &agentv1.KillContainerRequest{ContainerId: "stubborn", Signal: "SIGTERM", GracePeriod: durationpb.New(500 * time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "stubborn"})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 400*time.Millisecond || took > 10*time.Second {
		t.Errorf("ended after %v; want about the 500ms grace", took)
	}
	if w.Container.GetExitCode() != 137 || w.Container.State != typesv1.TaskState_TASK_KILLED {
		t.Errorf("want SIGKILL (137), TASK_KILLED: %v exit %d", w.Container.State, w.Container.GetExitCode())
	}
}

func waitForOutput(t *testing.T, id, want string) {
	t.Helper()
	c := inspect(t, id)
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if b, _ := os.ReadFile(filepath.Join(c.Sandbox, "stdout")); strings.Contains(string(b), want) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("container %s never printed %q", id, want)
}

func TestDetachedRunWaitKillRm(t *testing.T) {
	r := h.cli("run", "-d", "--name", "bg", testImage, "sh", "-c", "sleep 300")
	if r.code != 0 || r.stdout != "bg\n" {
		t.Fatal(r)
	}
	if r := h.cli("kill", "-s", "KILL", "bg"); r.code != 0 {
		t.Fatal(r)
	}
	if r := h.cli("wait", "bg"); r.code != 0 || r.stdout != "137\n" {
		t.Fatalf("wait: %s", r)
	}
	if r := h.cli("inspect", "bg"); !strings.Contains(r.stdout, "TASK_KILLED") || !strings.Contains(r.stdout, "Exit code:     137") {
		t.Errorf("inspect:\n%s", r.stdout)
	}
	if r := h.cli("inspect", "-o", "json", "bg"); !strings.Contains(r.stdout, `"state": "TASK_KILLED"`) {
		t.Errorf("inspect -o json:\n%s", r.stdout)
	}
	if r := h.cli("rm", "bg"); r.code != 0 {
		t.Fatal(r)
	}
	// -d --rm: the agent removes it; wait still answers.
	r = h.cli("run", "-d", "--rm", "--name", "bg-rm", testImage, "sh", "-c", "exit 4")
	if r.code != 0 {
		t.Fatal(r)
	}
	if r := h.cli("wait", "bg-rm"); r.stdout != "4\n" {
		t.Errorf("wait on auto-removed: %s", r)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(h.cli("ps", "-a").stdout, "bg-rm") {
		if time.Now().After(deadline) {
			t.Fatal("auto-removed container still listed")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRuntimeProfiles(t *testing.T) {
	st, err := h.client.GetState(ctxT(t), &agentv1.GetStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*agentv1.Runtime{}
	for _, rt := range st.Runtimes {
		got[rt.Name] = rt
	}
	if !got["runc"].GetAvailable() || !got["runc-path"].GetAvailable() {
		t.Errorf("runc profiles should be available: %v", st.Runtimes)
	}
	for _, name := range []string{"missing-binary", "missing-shim"} {
		if got[name].GetAvailable() || got[name].GetUnavailableReason() == "" {
			t.Errorf("%s should be unavailable with a reason: %v", name, got[name])
		}
		r := h.cli("run", "--rm", "--runtime", name, testImage, "true")
		if r.code != 125 || !strings.Contains(r.stderr, "cannot run on this host") {
			t.Errorf("launch with %s: %s", name, r)
		}
	}
	if r := h.cli("run", "--rm", "--runtime", "runc-path", testImage, "echo", "ok"); r.code != 0 || r.stdout != "ok\n" {
		t.Errorf("runtime by binary path: %s", r)
	}
	if !strings.Contains(tail(h.agentLog, 10000), "missing-binary") {
		t.Error("the agent did not report the unavailable runtime at start")
	}
}

// SIGTERM stops the agent and leaves containers running; a new agent finds
// them, and one that exited meanwhile reports its true exit status.
func TestAgentRestartLeavesContainersRunning(t *testing.T) {
	run := launch(t, "survivor", "sh", "-c", "echo before; sleep 300")
	launch(t, "exits-while-down", "sh", "-c", "echo waiting; sleep 2; echo done; exit 7")
	waitForOutput(t, "survivor", "before")
	// A follower is connected while the agent stops: the agent does not
	// wait for it, and the follower resumes from its cursor once a new agent
	// serves, printing each line once.
	follower := make(chan result, 1)
	go func() { follower <- h.cli("logs", "-f", "survivor") }()
	time.Sleep(300 * time.Millisecond)
	stopStart := time.Now()
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatalf("agent did not exit cleanly on SIGTERM: %v", err)
	}
	// An agent that waited for the follower would stop only at its 5 s
	// fallback (grpc.Server.Stop after GracefulStop).
	if took := time.Since(stopStart); took >= 5*time.Second {
		t.Errorf("agent took %v to stop with a follower connected: it waited for the follower", took)
	}
	if err := syscall.Kill(int(run.Pid), 0); err != nil {
		t.Fatalf("container died with the agent: %v", err)
	}
	time.Sleep(3 * time.Second) // exits-while-down exits now
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if c := inspect(t, "survivor"); c.State != typesv1.TaskState_TASK_RUNNING || c.Pid != run.Pid {
		t.Errorf("survivor after restart: %v pid %d (was %d)", c.State, c.Pid, run.Pid)
	}
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "exits-while-down"})
	if err != nil {
		t.Fatal(err)
	}
	if w.Container.GetExitCode() != 7 || w.Container.State != typesv1.TaskState_TASK_FAILED {
		t.Errorf("exited while down: %v exit %d", w.Container.State, w.Container.GetExitCode())
	}
	if r := h.cli("logs", "exits-while-down"); r.stdout != "waiting\ndone\n" {
		t.Errorf("output written while the agent was down: %q", r.stdout)
	}
	// The recovered container can still be killed and waited for.
	if _, err := h.client.KillContainer(ctxT(t), &agentv1.KillContainerRequest{ContainerId: "survivor"}); err != nil {
		t.Fatal(err)
	}
	if w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "survivor"}); err != nil || w.Container.GetExitCode() != 137 {
		t.Errorf("wait after recovery: %v %v", w, err)
	}
	if r := <-follower; r.code != 0 || r.stdout != "before\n" {
		t.Errorf("follower across the agent's restart: %s", r)
	}
}

func wantCode(t *testing.T, err error, code codes.Code, msgPart string) {
	t.Helper()
	st, ok := status.FromError(err)
	if err == nil || !ok || st.Code() != code {
		t.Errorf("got %v, want code %v", err, code)
		return
	}
	if !strings.Contains(st.Message(), msgPart) {
		t.Errorf("message %q does not mention %q", st.Message(), msgPart)
	}
}

func TestLogsFollowUntilExit(t *testing.T) {
	launch(t, "chatty", "sh", "-c", "for i in $(seq 1 20); do echo line $i; sleep 0.05; done; echo bye >&2")
	r := h.cli("logs", "-f", "chatty")
	want := ""
	for i := 1; i <= 20; i++ {
		want += fmt.Sprintf("line %d\n", i)
	}
	if r.code != 0 || r.stdout != want || r.stderr != "bye\n" {
		t.Fatalf("logs -f: %s", r)
	}
}

func TestAgentSocketMode(t *testing.T) {
	fi, err := os.Stat(h.agentSock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("agent socket mode %v, want a socket with 0660", fi.Mode())
	}
	g, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Fatal(err)
	}
	if gid := fmt.Sprint(fi.Sys().(*syscall.Stat_t).Gid); gid != g.Gid {
		t.Errorf("socket group %s, want socket_group nogroup (%s)", gid, g.Gid)
	}
}

// Containers run with no-new-privileges, the default seccomp profile and
// masked, read-only /proc paths; privileged ones only where allowed.
func TestSecurityDefaults(t *testing.T) {
	r := h.cli("run", "--rm", testImage, "sh", "-c", `grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; wc -c < /proc/timer_list; echo 1 > /proc/sys/kernel/ns_last_pid && echo writable`)
	if !strings.Contains(r.stdout, "NoNewPrivs:\t1") || !strings.Contains(r.stdout, "Seccomp:\t2") {
		t.Errorf("no-new-privileges and seccomp filter expected:\n%s", r)
	}
	if !strings.Contains(r.stdout, "\n0\n") || strings.Contains(r.stdout, "writable") {
		t.Errorf("/proc/timer_list should be masked and /proc/sys read-only:\n%s", r)
	}
	// unshare(2) is among what the default seccomp profile refuses without CAP_SYS_ADMIN.
	if r := h.cli("run", "--rm", testImage, "unshare", "-m", "true"); r.code == 0 {
		t.Errorf("unshare -m succeeded in an unprivileged container: %s", r)
	}
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}, Privileged: true})
	wantCode(t, err, codes.PermissionDenied, "allow_privileged")
}

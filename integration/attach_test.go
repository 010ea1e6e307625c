package integration

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"google.golang.org/grpc/codes"

	"github.com/gearboxd/gearbox/internal/demoimage"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// tmux is a real terminal for the CLI: a private tmux server.
type tmux struct {
	t    *testing.T
	sock string
}

func newTmux(t *testing.T, width, height string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is needed: apt-get install tmux (hack/install-deps.sh test does it)")
	}
	tm := &tmux{t: t, sock: "gb-" + strings.ReplaceAll(h.namespace, "-", "") + "-" + strings.ReplaceAll(t.Name(), "/", "")}
	tm.run("new-session", "-d", "-s", "t", "-x", width, "-y", height)
	t.Cleanup(func() { tm.run("kill-server") })
	return tm
}

func (tm *tmux) run(args ...string) string {
	out, _ := exec.Command("tmux", append([]string{"-L", tm.sock}, args...)...).CombinedOutput()
	return string(out)
}

// cli types a gearbox command line, followed by one that prints its exit
// status as CLI_EXIT=N.
func (tm *tmux) cli(args string) {
	tm.keys("GEARBOX_AGENT=unix://"+h.agentSock+" "+filepath.Join(h.bin, "gearbox")+" "+args+"; echo CLI_EXIT=$?", "Enter")
}

func (tm *tmux) keys(keys ...string) {
	tm.run(append([]string{"send-keys", "-t", "t"}, keys...)...)
}

// screen waits up to 30 s for want on the screen and returns the screen.
func (tm *tmux) screen(want string) string {
	return tm.screenWithin(want, 30*time.Second)
}

func (tm *tmux) screenWithin(want string, within time.Duration) string {
	deadline := time.Now().Add(within)
	for {
		s := tm.run("capture-pane", "-t", "t", "-p")
		if strings.Contains(s, want) || time.Now().After(deadline) {
			return s
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (tm *tmux) expect(want, what string) {
	tm.t.Helper()
	if s := tm.screen(want); !strings.Contains(s, want) {
		tm.t.Fatalf("%s: %q not on the screen:\n%s", what, want, s)
	}
}

// expectRetyping types line until want is on the screen, for what reaches
// the container at some point (a resize) rather than at a known time.
func (tm *tmux) expectRetyping(line, want, what string) {
	tm.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		tm.keys(line, "Enter")
		s := tm.screenWithin(want, 2*time.Second)
		if strings.Contains(s, want) {
			return
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("%s: %q not on the screen within 30s:\n%s", what, want, s)
		}
	}
}

// run -it, typing, detach keys, attach again (also after an agent
// restart), two output readers, and exit 3 making both the CLI and the
// readers exit 3.
func TestRunInteractiveAttachDetach(t *testing.T) {
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "att", Force: true})
	})
	tm := newTmux(t, "100", "30")
	tm.cli("run -it --name att " + testImage + " sh")
	tm.expect("/ #", "prompt of run -it")
	tm.keys("echo typed-$((6*7))", "Enter")
	tm.expect("typed-42", "output of a typed command")
	tm.keys("C-p", "C-q")
	tm.expect("CLI_EXIT=0", "detach keys end the CLI")
	get := func() *agentv1.Container {
		resp, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Containers {
			if c.Id == "att" {
				return c
			}
		}
		t.Fatal("container att is gone")
		return nil
	}
	if c := get(); c.State != typesv1.TaskState_TASK_RUNNING || !c.Tty || !c.Stdin {
		t.Fatalf("after detach: %v tty=%v stdin=%v", c.State, c.Tty, c.Stdin)
	}

	// Attach keeps working across an agent restart.
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}

	// Two readers, then one writer in the terminal.
	var readers []*exec.Cmd
	var outs []*bytes.Buffer
	for range 2 {
		cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "attach", "--no-stdin", "att")
		cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+h.agentSock)
		out := &bytes.Buffer{}
		cmd.Stdout = out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		readers, outs = append(readers, cmd), append(outs, out)
	}
	time.Sleep(time.Second)
	tm.keys("clear", "Enter")
	tm.cli("attach att")
	time.Sleep(time.Second)
	tm.keys("echo both-$((5*5))", "Enter")
	tm.expect("both-25", "output after attaching again")
	tm.keys("exit 3", "Enter")
	tm.expect("CLI_EXIT=3", "exit status through attach")
	for i, r := range readers {
		done := make(chan error, 1)
		go func() { done <- r.Wait() }()
		select {
		case err := <-done:
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Errorf("reader %d: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			r.Process.Kill()
			t.Errorf("reader %d did not end with the container", i)
		}
		if !strings.Contains(outs[i].String(), "both-25") {
			t.Errorf("reader %d saw %q", i, outs[i].String())
		}
	}
}

func TestAttachRefusals(t *testing.T) {
	launch(t, "no-stdin", "sleep", "300")
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "i-no-t", Image: testImage, Stdin: true})
	wantCode(t, err, codes.InvalidArgument, "set tty")
	if _, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "held", Image: testImage, Stdin: true, Tty: true,
		Cmd: &agentv1.StringList{Values: []string{"sh"}}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "held", Force: true})
	})

	attach := func(ctx context.Context, start *agentv1.AttachInputStart, more ...*agentv1.AttachInputRequest) (agentv1.Agent_AttachContainerInputClient, error) {
		st, err := h.client.AttachContainerInput(ctx)
		if err != nil {
			return nil, err
		}
		st.Send(&agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Start{Start: start}})
		for _, m := range more {
			st.Send(m)
		}
		return st, nil
	}
	// The refusal arrives on Recv.
	refused := func(start *agentv1.AttachInputStart, more ...*agentv1.AttachInputRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := attach(ctx, start, more...)
		if err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	}
	wantCode(t, refused(&agentv1.AttachInputStart{ContainerId: "no-stdin"}), codes.FailedPrecondition, "without stdin open")
	wantCode(t, refused(&agentv1.AttachInputStart{ContainerId: "ghost"}), codes.NotFound, "ghost")
	wantCode(t, refused(&agentv1.AttachInputStart{ContainerId: "held", DetachKeys: "ctrl-1"}), codes.InvalidArgument, "ctrl-1")
	wantCode(t, refused(&agentv1.AttachInputStart{ContainerId: "held"}, &agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Resize{Resize: &agentv1.WindowSize{}}}),
		codes.InvalidArgument, "0x0")

	// One writer at a time.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	first, err := attach(ctx, &agentv1.AttachInputStart{ContainerId: "held"}, &agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Stdin{Stdin: []byte("echo held-$((6*7))\n")}})
	if err != nil {
		t.Fatal(err)
	}
	// The first writer is attached once what it typed ran.
	stdout := filepath.Join(inspect(t, "held").Sandbox, "stdout")
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, _ := os.ReadFile(stdout); strings.Contains(string(b), "held-42") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("what the first writer typed did not run within 30s")
		}
	}
	wantCode(t, refused(&agentv1.AttachInputStart{ContainerId: "held"}), codes.FailedPrecondition, "one writer at a time")
	// A detach through the API: the server says so and the container runs on.
	first.Send(&agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_Stdin{Stdin: []byte{16, 17}}})
	if m, err := first.Recv(); err != nil || m.GetDetached() == nil {
		t.Fatalf("detach: %v %v", m, err)
	}
	// The writer's place is free again.
	st, err := attach(ctx, &agentv1.AttachInputStart{ContainerId: "held"}, &agentv1.AttachInputRequest{Frame: &agentv1.AttachInputRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("after close_stdin: %v", err)
	}
	// Closing a TTY's stdin hangs it up: the shell ends.
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "held"})
	if err != nil || w.Container.FinishedAt == nil {
		t.Errorf("shell after stdin closed: %v %v", w, err)
	}
}

// shelllessImage is an image with nothing but a static busybox at /busybox
// and a command that sleeps: no /bin/sh, as a distroless image.
func shelllessImage(t *testing.T) string {
	t.Helper()
	bb, err := os.ReadFile(demoimage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "busybox", Mode: 0o755, Size: int64(len(bb)), Typeflag: tar.TypeReg})
	tw.Write(bb)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", demoimageArch()
	cf.Config.Cmd = []string{"/busybox", "sleep", "3600"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	const ref = "localhost/shellless:1"
	path := filepath.Join(h.dir, "shellless.tar")
	if err := writeFile(path, func(f *os.File) error { return demoimage.WriteDockerArchive(f, img, ref) }); err != nil {
		t.Fatal(err)
	}
	if err := h.cliImport(path); err != nil {
		t.Fatal(err)
	}
	return ref
}

func demoimageArch() string {
	cf, _ := h.img.ConfigFile()
	return cf.Architecture
}

// A debug container from another image sees the target's processes, has
// its cgroup under the target's, and is gone once it ends.
func TestDebugContainer(t *testing.T) {
	ref := shelllessImage(t)
	if _, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "distroless", Image: ref}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "distroless", Force: true})
	})
	if r := h.cli("exec", "distroless", "sh"); r.code != 127 {
		t.Fatalf("exec sh in a shell-less image: %s", r)
	}
	r := h.cli("debug", "--image", testImage, "--memory", "64m", "distroless", "sh", "-c", "ps; cat /proc/self/cgroup")
	if r.code != 0 || !strings.Contains(r.stdout, "/busybox sleep 3600") {
		t.Fatalf("debug ps: %s", r)
	}
	// /proc/self/cgroup: "N:memory:/PATH" on v1, "0::/PATH" on v2.
	if !strings.Contains(r.stdout, ":/"+h.namespace+"/distroless/debug-") {
		t.Errorf("the debug container's cgroup is not under the target's: %s", r.stdout)
	}
	ended := time.Now()
	for {
		conts, err := h.ctrd(t).Containers(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		left := 0
		for _, c := range conts {
			if strings.HasPrefix(c.ID(), "distroless.debug-") {
				left++
			}
		}
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/memory", h.namespace, "distroless", "debug-*")) // v1
		v2, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", h.namespace, "distroless", "debug-*"))
		dirs = append(dirs, v2...)
		if left == 0 && len(dirs) == 0 {
			break
		}
		if time.Since(ended) > 30*time.Second {
			t.Fatalf("30 s after the session: %d debug containers, cgroups %v", left, dirs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := h.cli("debug", "--image", "localhost/absent:1", "distroless", "true"); r.code != 125 || !strings.Contains(r.stderr, "pull it first") {
		t.Errorf("debug with an absent image: %s", r)
	}
	if r := h.cli("debug", "distroless", "true"); r.code != 125 || !strings.Contains(r.stderr, "--image") {
		t.Errorf("debug without --image: %s", r)
	}
}

func TestNestedContainers(t *testing.T) {
	launch(t, "nest", "sleep", "300")
	ctx := ctxT(t)
	nl := func(id string, args ...string) (*agentv1.NestedContainer, error) {
		resp, err := h.client.LaunchNestedContainer(ctx, &agentv1.LaunchNestedContainerRequest{ContainerId: id, Command: args})
		return resp.GetContainer(), err
	}
	if _, err := nl("nest.out", "sh", "-c", "echo nested-out; echo nested-err >&2; exit 4"); err != nil {
		t.Fatal(err)
	}
	w, err := h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: "nest.out"})
	if err != nil || w.Container.GetExitCode() != 4 || w.Container.State != typesv1.TaskState_TASK_FAILED {
		t.Fatalf("wait: %v %v", w, err)
	}
	if r := h.cli("logs", "nest.out"); r.stdout != "nested-out\n" || r.stderr != "nested-err\n" {
		t.Errorf("nested output: %s", r)
	}
	if !strings.HasPrefix(w.Container.Sandbox, filepath.Join(h.workDir(), "sandboxes", "nest", "containers", "out")) {
		t.Errorf("nested sandbox %s", w.Container.Sandbox)
	}
	// Kill, and it is TASK_KILLED.
	n, err := nl("nest.sleeper", "sleep", "300")
	if err != nil || n.State != typesv1.TaskState_TASK_RUNNING || n.Pid == 0 {
		t.Fatalf("launch: %v %v", n, err)
	}
	_, err = h.client.RemoveNestedContainer(ctx, &agentv1.RemoveNestedContainerRequest{ContainerId: "nest.sleeper"})
	wantCode(t, err, codes.FailedPrecondition, "running")
	if _, err := h.client.KillNestedContainer(ctx, &agentv1.KillNestedContainerRequest{ContainerId: "nest.sleeper", Signal: "TERM"}); err != nil {
		t.Fatal(err)
	}
	if w, err := h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: "nest.sleeper"}); err != nil || w.Container.State != typesv1.TaskState_TASK_KILLED {
		t.Errorf("after kill: %v %v", w, err)
	}
	if _, err := h.client.RemoveNestedContainer(ctx, &agentv1.RemoveNestedContainerRequest{ContainerId: "nest.sleeper"}); err != nil {
		t.Fatal(err)
	}
	_, err = h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: "nest.sleeper"})
	wantCode(t, err, codes.NotFound, "nest.sleeper")

	// Refused cleanly.
	_, err = nl("nodot", "true")
	wantCode(t, err, codes.InvalidArgument, "PARENT.CHILD")
	_, err = nl("ghost.child", "true")
	wantCode(t, err, codes.NotFound, "ghost")
	_, err = nl("nest.out", "true")
	wantCode(t, err, codes.AlreadyExists, "nest.out")
	_, err = nl("nest.x", "no-such-command")
	wantCode(t, err, codes.InvalidArgument, "no-such-command")

	// A nested container survives an agent restart, and ends with its
	// parent.
	if _, err := nl("nest.long", "sleep", "300"); err != nil {
		t.Fatal(err)
	}
	if err := h.stopAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.KillContainer(ctx, &agentv1.KillContainerRequest{ContainerId: "nest"}); err != nil {
		t.Fatal(err)
	}
	w, err = h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: "nest.long"})
	if err != nil || w.Container.FinishedAt == nil {
		t.Fatalf("nested after its parent ended: %v %v", w, err)
	}
	waitExit(t, "nest", 30*time.Second)
	_, err = nl("nest.late", "true")
	wantCode(t, err, codes.FailedPrecondition, "not running")
}

// A uid without the debug role opens no session, attaches nothing and runs
// no debug container; every allowed session is in the audit log.
func TestSessionsNeedTheDebugRole(t *testing.T) {
	launch(t, "guarded", "sleep", "300")
	auditPath := filepath.Join(h.workDir(), "audit.log")
	before, _ := os.ReadFile(auditPath)
	nobody := cliAsNobody
	for _, args := range [][]string{
		{"exec", "guarded", "true"},
		{"debug", "--image", testImage, "guarded", "true"},
		{"attach", "guarded"},
	} {
		if r := nobody(args...); r.code == 0 || !strings.Contains(r.stderr, "role") {
			t.Errorf("nobody ran %v: %s", args, r)
		}
	}
	if r := h.cli("exec", "guarded", "true"); r.code != 0 {
		t.Fatal(r)
	}
	if r := h.cli("debug", "--image", testImage, "guarded", "true"); r.code != 0 {
		t.Fatal(r)
	}
	// A session's end record is written when it is cleaned up, just
	// after its exit status is sent; its start record before it ran.
	var recs []map[string]any
	starts := 0
	for deadline := time.Now().Add(30 * time.Second); len(recs) < 2 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		after, _ := os.ReadFile(auditPath)
		recs, starts = nil, 0
		for _, l := range strings.Split(strings.TrimSpace(strings.TrimPrefix(string(after), string(before))), "\n") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("audit line %q: %v", l, err)
			}
			switch m["event"] {
			case "end":
				recs = append(recs, m)
			case "start":
				starts++
			}
		}
	}
	if starts != 2 {
		t.Errorf("%d start records, want 2", starts)
	}
	if len(recs) != 2 || recs[0]["container_id"] != "guarded" || recs[1]["image"] != testImage || recs[1]["exit_code"] != float64(0) {
		t.Errorf("audit records of this test: %v", recs)
	}
	for _, r := range recs {
		if id, _ := r["identity"].(string); !strings.Contains(id, "uid:0") {
			t.Errorf("audit identity %v", r["identity"])
		}
	}
}

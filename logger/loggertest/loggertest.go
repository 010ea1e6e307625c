// Package loggertest is the contract suite every ContainerLogger runs: the
// built-in sandbox and logrotate loggers, and any custom logger that reads
// its output back.
//
// The suite drives a logger as containerd does and nothing more: it calls
// Prepare, and for the binary:// IO it returns it starts the logger binary
// the way the runc shim's binary logging does (arguments as bare key value
// pairs, CONTAINER_ID and CONTAINER_NAMESPACE in an otherwise empty
// environment, stdout on fd 3, stderr on fd 4, fd 5 closed when ready). It
// then writes to the pipes as a container would, ends them as the task's
// exit does, and reads the output back through Read.
package loggertest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/logger"
)

// deadline bounds every wait of the suite, so that a logger that hangs
// fails the suite with a message instead of hanging it. It is generous:
// the suite states order and completeness, never speed.
const deadline = time.Minute

// Run checks what the agent relies on from any ContainerLogger:
//   - Prepare gives an IO whose logger starts and says it is ready;
//   - what a container writes to stdout and stderr is read back whole, in
//     order, each stream apart, once the container's output is complete;
//   - a read resumed from a chunk's cursor gives what followed, once;
//   - Tail gives the last lines of each stream;
//   - a follow started before the output sees all of it, and returns once
//     Done is closed;
//   - Check is nil while the logger runs and says so once it died;
//   - Cleanup is idempotent, also for a container never prepared.
//
// Sandboxes are made in the directory sandboxes (a logger may keep to the
// root it was given, as filelog does). opts must keep everything the suite
// writes: under 64 KiB per stream.
func Run(t *testing.T, l logger.ContainerLogger, sandboxes string, opts logger.Options) {
	t.Helper()
	s := suite{l: l, sandboxes: sandboxes, opts: opts}
	for _, c := range []struct {
		name string
		test func(*testing.T, suite)
	}{
		{"ReadsBackBothStreams", readsBackBothStreams},
		{"CursorResumes", cursorResumes},
		{"Tail", tail},
		{"Follow", follow},
		{"CheckNoticesADeadLogger", checkNoticesADeadLogger},
		{"CleanupIsIdempotent", cleanupIsIdempotent},
	} {
		t.Run(c.name, func(t *testing.T) { c.test(t, s) })
	}
}

// suite is what every case of Run tests: a logger, the directory its
// sandboxes are made in, and the options its containers are given.
type suite struct {
	l         logger.ContainerLogger
	sandboxes string
	opts      logger.Options
}

func readsBackBothStreams(t *testing.T, s suite) {
	l, sandboxes, opts := s.l, s.sandboxes, s.opts
	r := start(t, l, sandboxes, opts)
	var wantOut, wantErr bytes.Buffer
	for i := range 500 {
		fmt.Fprintf(&wantOut, "out %d\n", i)
		fmt.Fprintf(&wantErr, "err %d\n", i)
		r.write(t, logger.Stdout, fmt.Sprintf("out %d\n", i))
		r.write(t, logger.Stderr, fmt.Sprintf("err %d\n", i))
	}
	if err := l.Check(context.Background(), r.c); err != nil {
		t.Errorf("Check of a running logger: %v", err)
	}
	r.end(t)
	out, errs, _ := read(t, l, logger.ReadRequest{Container: r.c, Tail: -1})
	if out != wantOut.String() {
		t.Errorf("stdout read back: %d bytes, want %d (%s)", len(out), wantOut.Len(), firstDiff(out, wantOut.String()))
	}
	if errs != wantErr.String() {
		t.Errorf("stderr read back: %d bytes, want %d (%s)", len(errs), wantErr.Len(), firstDiff(errs, wantErr.String()))
	}
	only, none, _ := read(t, l, logger.ReadRequest{Container: r.c, Tail: -1, Streams: []logger.Stream{logger.Stdout}})
	if only != wantOut.String() || none != "" {
		t.Errorf("a read of stdout alone: %d bytes of stdout, %d of stderr", len(only), len(none))
	}
}

func cursorResumes(t *testing.T, s suite) {
	l, sandboxes, opts := s.l, s.sandboxes, s.opts
	r := start(t, l, sandboxes, opts)
	r.write(t, logger.Stdout, "a1\na2\n")
	r.write(t, logger.Stderr, "e1\n")
	cursor := waitFor(t, l, r.c, "a1\na2\n", "e1\n")
	r.write(t, logger.Stdout, "b1\nb2\n")
	r.write(t, logger.Stderr, "e2\n")
	r.end(t)
	out, errs, _ := read(t, l, logger.ReadRequest{Container: r.c, Tail: -1, Cursor: cursor})
	if out != "b1\nb2\n" || errs != "e2\n" {
		t.Errorf("read from the cursor after the first output: stdout %q stderr %q, want %q and %q", out, errs, "b1\nb2\n", "e2\n")
	}
}

func tail(t *testing.T, s suite) {
	l, sandboxes, opts := s.l, s.sandboxes, s.opts
	r := start(t, l, sandboxes, opts)
	for i := range 100 {
		r.write(t, logger.Stdout, fmt.Sprintf("o%02d\n", i))
		r.write(t, logger.Stderr, fmt.Sprintf("e%02d\n", i))
	}
	r.end(t)
	out, errs, _ := read(t, l, logger.ReadRequest{Container: r.c, Tail: 3})
	if out != "o97\no98\no99\n" || errs != "e97\ne98\ne99\n" {
		t.Errorf("tail 3: stdout %q stderr %q", out, errs)
	}
	if out, errs, _ := read(t, l, logger.ReadRequest{Container: r.c, Tail: 0}); out != "" || errs != "" {
		t.Errorf("tail 0: stdout %q stderr %q, want nothing", out, errs)
	}
}

func follow(t *testing.T, s suite) {
	l, sandboxes, opts := s.l, s.sandboxes, s.opts
	r := start(t, l, sandboxes, opts)
	done := make(chan struct{})
	type result struct {
		out, errs string
		err       error
	}
	res := make(chan result, 1)
	go func() {
		var o, e bytes.Buffer
		err := l.Read(context.Background(), logger.ReadRequest{Container: r.c, Tail: -1, Follow: true, Done: done}, func(ch logger.Chunk) error {
			if ch.Stream == logger.Stderr {
				e.Write(ch.Data)
			} else {
				o.Write(ch.Data)
			}
			return nil
		})
		res <- result{o.String(), e.String(), err}
	}()
	var want bytes.Buffer
	for i := range 2000 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		r.write(t, logger.Stdout, line)
	}
	r.write(t, logger.Stderr, "bye\n")
	r.end(t)
	close(done) // the output is complete: the logger has exited
	select {
	case got := <-res:
		if got.err != nil {
			t.Fatalf("follow: %v", got.err)
		}
		if got.out != want.String() || got.errs != "bye\n" {
			t.Errorf("follow saw %d bytes of stdout (want %d: %s) and stderr %q", len(got.out), want.Len(), firstDiff(got.out, want.String()), got.errs)
		}
	case <-time.After(deadline):
		t.Fatalf("a follow did not return within %s of Done", deadline)
	}
}

func checkNoticesADeadLogger(t *testing.T, s suite) {
	l, sandboxes, opts := s.l, s.sandboxes, s.opts
	r := start(t, l, sandboxes, opts)
	if err := l.Check(context.Background(), r.c); err != nil {
		t.Fatalf("Check of a running logger: %v", err)
	}
	r.kill(t)
	if err := l.Check(context.Background(), r.c); err == nil {
		t.Error("Check is nil after the logger was killed while its container runs: lost output would go unnoticed")
	}
}

func cleanupIsIdempotent(t *testing.T, s suite) {
	l, sandboxes, opts := s.l, s.sandboxes, s.opts
	r := start(t, l, sandboxes, opts)
	r.end(t)
	for i := range 2 {
		if err := l.Cleanup(context.Background(), r.c); err != nil {
			t.Fatalf("Cleanup #%d: %v", i+1, err)
		}
	}
	never := logger.Container{ID: "never-prepared", Namespace: "loggertest", Sandbox: newSandbox(t, sandboxes), Options: opts}
	if err := l.Cleanup(context.Background(), never); err != nil {
		t.Errorf("Cleanup of a container never prepared: %v", err)
	}
}

// running is one container's logger, started as the shim starts it.
type running struct {
	c       logger.Container
	cmd     *exec.Cmd
	out     *os.File // the container's stdout, as the shim holds it
	errs    *os.File
	stderr  *bytes.Buffer // the logger's own
	exited  chan error
	stopped bool
}

// newSandbox makes an empty sandbox in the directory sandboxes.
func newSandbox(t *testing.T, sandboxes string) string {
	t.Helper()
	dir, err := os.MkdirTemp(sandboxes, "sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func start(t *testing.T, l logger.ContainerLogger, sandboxes string, opts logger.Options) *running {
	t.Helper()
	id := strings.NewReplacer("/", ".").Replace(t.Name())
	c := logger.Container{ID: id, Namespace: "loggertest", Sandbox: newSandbox(t, sandboxes), Options: opts}
	ctx := context.Background()
	creator, err := l.Prepare(ctx, c)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	cio, err := creator(c.ID)
	if err != nil {
		t.Fatalf("creating the IO Prepare returned: %v", err)
	}
	cfg := cio.Config()
	u, err := url.Parse(cfg.Stdout)
	if err != nil || u.Scheme != "binary" {
		t.Fatalf("Prepare gave stdout %q: the suite drives binary:// loggers (containerd's binary logging)", cfg.Stdout)
	}
	// As containerd's NewBinaryCmd: bare key value pairs, in no fixed order.
	var args []string
	for k, vs := range u.Query() {
		args = append(args, k)
		if len(vs) > 0 {
			args = append(args, vs[0])
		}
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(u.Path, args...)
	cmd.Env = []string{"CONTAINER_ID=" + c.ID, "CONTAINER_NAMESPACE=" + c.Namespace}
	cmd.ExtraFiles = []*os.File{outR, errR, readyW}
	r := &running{c: c, cmd: cmd, out: outW, errs: errW, stderr: &bytes.Buffer{}, exited: make(chan error, 1)}
	cmd.Stderr = r.stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the logger %s: %v", u.Path, err)
	}
	outR.Close()
	errR.Close()
	readyW.Close()
	go func() { r.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if !r.stopped {
			r.out.Close()
			r.errs.Close()
			cmd.Process.Kill()
			<-r.exited
		}
		l.Cleanup(context.Background(), c)
	})
	ready := make(chan error, 1)
	go func() { _, err := io.ReadAll(readyR); readyR.Close(); ready <- err }()
	select {
	case <-ready:
	case <-time.After(deadline):
		t.Fatalf("the logger did not close fd 5 (ready) within %s: containerd's NewTask would hang", deadline)
	}
	return r
}

func (r *running) write(t *testing.T, s logger.Stream, data string) {
	t.Helper()
	f := r.out
	if s == logger.Stderr {
		f = r.errs
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatalf("writing to the logger's %s: %v (its stderr: %s)", s, err, r.stderr)
	}
}

// end ends the container's output, as its exit does, and waits for the
// logger to drain and exit.
func (r *running) end(t *testing.T) {
	t.Helper()
	r.out.Close()
	r.errs.Close()
	r.stopped = true
	select {
	case err := <-r.exited:
		if err != nil {
			t.Fatalf("the logger exited with %v once the output ended (its stderr: %s)", err, r.stderr)
		}
	case <-time.After(deadline):
		r.cmd.Process.Kill()
		<-r.exited
		t.Fatalf("the logger did not exit within %s of its output's end", deadline)
	}
}

// kill kills the logger while the container's output is still open.
func (r *running) kill(t *testing.T) {
	t.Helper()
	if err := r.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-r.exited
	r.out.Close()
	r.errs.Close()
	r.stopped = true
}

// read reads without following and returns each stream's output and the
// last cursor.
func read(t *testing.T, l logger.ContainerLogger, req logger.ReadRequest) (stdout, stderr, cursor string) {
	t.Helper()
	var o, e bytes.Buffer
	err := l.Read(context.Background(), req, func(ch logger.Chunk) error {
		switch ch.Stream {
		case logger.Stdout:
			o.Write(ch.Data)
		case logger.Stderr:
			e.Write(ch.Data)
		default:
			return fmt.Errorf("a chunk of stream %d", ch.Stream)
		}
		cursor = ch.Cursor
		return nil
	})
	if err != nil {
		t.Fatalf("Read(%+v): %v", req, err)
	}
	return o.String(), e.String(), cursor
}

// waitFor reads until the output is exactly stdout and stderr (the logger
// writes behind the pipe) and returns the cursor after it.
func waitFor(t *testing.T, l logger.ContainerLogger, c logger.Container, stdout, stderr string) string {
	t.Helper()
	end := time.Now().Add(deadline)
	for {
		o, e, cursor := read(t, l, logger.ReadRequest{Container: c, Tail: -1})
		if o == stdout && e == stderr {
			return cursor
		}
		if time.Now().After(end) || !strings.HasPrefix(stdout, o) || !strings.HasPrefix(stderr, e) {
			t.Fatalf("output read back: stdout %q stderr %q, want %q and %q", o, e, stdout, stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// firstDiff describes where got first differs from want.
func firstDiff(got, want string) string {
	n := min(len(got), len(want))
	for i := range n {
		if got[i] != want[i] {
			lo := max(i-20, 0)
			return fmt.Sprintf("at byte %d: got %q, want %q", i, got[lo:min(i+20, len(got))], want[lo:min(i+20, len(want))])
		}
	}
	if len(got) == len(want) {
		return "equal"
	}
	return fmt.Sprintf("one is a prefix of the other at byte %d", n)
}

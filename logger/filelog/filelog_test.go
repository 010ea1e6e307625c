package filelog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// setup makes a sandboxes directory with container c's sandbox in it and a
// host-only state directory, as the agent does.
func setup(t *testing.T, rotate bool, opts logger.Options) (*Logger, logger.Container) {
	t.Helper()
	base := t.TempDir()
	l := &Logger{Rotate: rotate, StateDir: filepath.Join(base, "state"), Sandboxes: filepath.Join(base, "sandboxes"), PollInterval: time.Millisecond}
	c := logger.Container{ID: "c", Namespace: "ns", Sandbox: filepath.Join(base, "sandboxes", "c"), Options: opts}
	for _, d := range []string{l.StateDir, c.Sandbox} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	return l, c
}

// startWriter runs the real gearbox-logger code in-process on a pipe, with
// the arguments Prepare gives it.
func startWriter(t *testing.T, l *Logger, c logger.Container) (out *os.File, wait func()) {
	t.Helper()
	or, ow, _ := os.Pipe()
	er, ew, _ := os.Pipe()
	if _, err := l.Prepare(context.Background(), c); err != nil { // makes the files before the task starts
		t.Fatal(err)
	}
	root, rel, err := l.rootRel(c)
	if err != nil {
		t.Fatal(err)
	}
	a := shimlog.Args{Root: root, Sandbox: rel, State: l.stateDir(c), MaxSize: c.Options.MaxSize, MaxFiles: max(c.Options.MaxFiles, 1), Mode: shimlog.ModeBlock}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); shimlog.Run(a, or, er, nil) }()
	return ow, func() { ow.Close(); ew.Close(); wg.Wait(); or.Close(); er.Close() }
}

func collect(t *testing.T, l *Logger, req logger.ReadRequest) (string, string) {
	t.Helper()
	var b bytes.Buffer
	var last string
	err := l.Read(context.Background(), req, func(c logger.Chunk) error {
		if c.Stream == logger.Stdout {
			b.Write(c.Data)
		}
		last = c.Cursor
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String(), last
}

// A follow across many rotations (about 100 here) sees every line exactly
// once, as long as retention is not outrun.
func TestFollowAcrossRotations(t *testing.T) {
	l, c := setup(t, true, logger.Options{MaxSize: 2048, MaxFiles: 500})
	out, wait := startWriter(t, l, c)
	done := make(chan struct{})
	const n = 20000
	go func() {
		for i := range n {
			fmt.Fprintf(out, "line %d\n", i)
		}
		wait()
		close(done)
	}()
	got, _ := collect(t, l, logger.ReadRequest{Container: c, Follow: true, Done: done, Tail: -1})
	lines := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("follow saw %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != fmt.Sprintf("line %d", i) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
}

func TestTailAndCursor(t *testing.T) {
	l, c := setup(t, true, logger.Options{MaxSize: 100, MaxFiles: 4})
	out, wait := startWriter(t, l, c)
	for i := range 40 {
		fmt.Fprintf(out, "l%02d\n", i)
	}
	wait()
	// 40 lines of 4 bytes over files of ≤ 100 bytes, 4 kept: 28 bytes… the
	// kept tail is what matters: tail 3 gives the last 3 lines.
	got, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: 3})
	if got != "l37\nl38\nl39\n" {
		t.Errorf("tail 3 = %q", got)
	}
	got, _ = collect(t, l, logger.ReadRequest{Container: c, Tail: 0})
	if got != "" {
		t.Errorf("tail 0 = %q", got)
	}
	all, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: -1})
	if !strings.HasSuffix(all, "l39\n") || strings.Count(all, "\n") < 25 {
		t.Errorf("all = %q", all)
	}
	// tail larger than what is kept gives everything kept.
	if got, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: 1000}); got != all {
		t.Errorf("tail 1000 = %q, want all kept", got)
	}
	// Resuming from a cursor taken mid-way gives the rest, once.
	var first bytes.Buffer
	var cursor string
	stop := fmt.Errorf("stop")
	err := l.Read(context.Background(), logger.ReadRequest{Container: c, Tail: 10, Streams: []logger.Stream{logger.Stdout}}, func(ch logger.Chunk) error {
		first.Write(ch.Data)
		cursor = ch.Cursor
		return stop
	})
	if err != stop {
		t.Fatal(err)
	}
	rest, _ := collect(t, l, logger.ReadRequest{Container: c, Cursor: cursor, Tail: -1, Streams: []logger.Stream{logger.Stdout}})
	if first.String()+rest != "l30\nl31\nl32\nl33\nl34\nl35\nl36\nl37\nl38\nl39\n" {
		t.Errorf("first %q + rest %q", first.String(), rest)
	}
}

func TestTailWithoutTrailingNewline(t *testing.T) {
	l, c := setup(t, false, logger.Options{})
	os.WriteFile(filepath.Join(c.Sandbox, "stdout"), []byte("a\nb\nc"), 0o644)
	os.WriteFile(filepath.Join(c.Sandbox, "stderr"), nil, 0o644)
	if got, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: 2}); got != "b\nc" {
		t.Errorf("tail 2 = %q", got)
	}
}

func TestParseCursor(t *testing.T) {
	p, err := ParseCursor("stdout=12:34,stderr=5:0")
	if err != nil || p[logger.Stdout] != (position{12, 34}) || p[logger.Stderr] != (position{5, 0}) {
		t.Fatalf("%v %v", p, err)
	}
	if formatCursor(p) != "stdout=12:34,stderr=5:0" {
		t.Errorf("round trip: %s", formatCursor(p))
	}
	for _, bad := range []string{"x", "stdout=1", "stdout=a:b", "stdin=1:2", "stdout=1:-2", "stdout=1:2,"} {
		if _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) accepted", bad)
		}
	}
}

func FuzzParseCursor(f *testing.F) {
	f.Add("stdout=12:34,stderr=5:0")
	f.Add("stdout=:")
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParseCursor(s); err == nil {
			if _, err := ParseCursor(formatCursor(p)); err != nil {
				t.Fatalf("cursor %q does not round-trip: %v", s, err)
			}
		}
	})
}

func TestCheckNoticesADeadLogger(t *testing.T) {
	l, c := setup(t, false, logger.Options{})
	if err := l.Check(context.Background(), c); err == nil {
		t.Error("no lock file, yet healthy")
	}
	os.MkdirAll(l.stateDir(c), 0o700)
	lock, _ := os.OpenFile(filepath.Join(l.stateDir(c), shimlog.LockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err := l.Check(context.Background(), c); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("unheld lock: %v", err)
	}
	lockExclusive(t, lock)
	if err := l.Check(context.Background(), c); err != nil {
		t.Errorf("held lock: %v", err)
	}
	os.WriteFile(filepath.Join(l.stateDir(c), shimlog.StatusFile), []byte("writing stdout: no space left on device"), 0o600)
	if err := l.Check(context.Background(), c); err == nil || !strings.Contains(err.Error(), "no space") {
		t.Errorf("status: %v", err)
	}
	if err := l.Cleanup(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(l.stateDir(c)); !os.IsNotExist(err) {
		t.Error("cleanup left the state directory")
	}
}

// When the writer outruns retention, a follower loses what was rotated away
// (as tail -F does) but never sees a line twice or out of order.
func TestFollowOutrunByRetentionStaysOrdered(t *testing.T) {
	l, c := setup(t, true, logger.Options{MaxSize: 1024, MaxFiles: 2})
	out, wait := startWriter(t, l, c)
	done := make(chan struct{})
	go func() {
		for i := range 50000 {
			fmt.Fprintf(out, "line %d\n", i)
		}
		wait()
		close(done)
	}()
	got, _ := collect(t, l, logger.ReadRequest{Container: c, Follow: true, Done: done, Tail: -1})
	prev := -1
	for _, line := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		var n int
		if _, err := fmt.Sscanf(line, "line %d", &n); err != nil || line != fmt.Sprintf("line %d", n) {
			t.Fatalf("torn line %q", line)
		}
		if n <= prev {
			t.Fatalf("line %d after %d", n, prev)
		}
		prev = n
	}
	if prev != 49999 {
		t.Fatalf("last line %d, want 49999", prev)
	}
}

func TestSince(t *testing.T) {
	l, c := setup(t, true, logger.Options{MaxSize: 64, MaxFiles: 50})
	out, wait := startWriter(t, l, c)
	fmt.Fprintf(out, "old 1\nold 2\n")
	time.Sleep(1100 * time.Millisecond)
	mark := time.Now()
	time.Sleep(1100*time.Millisecond - time.Duration(mark.Nanosecond())) // the next whole second
	since := time.Now()
	fmt.Fprintf(out, "new 1\nnew 2\n")
	for i := range 20 { // across rotations
		fmt.Fprintf(out, "more %d\n", i)
	}
	wait()
	got, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: -1, Since: since})
	if !strings.HasPrefix(got, "new 1\nnew 2\nmore 0\n") || !strings.HasSuffix(got, "more 19\n") || strings.Contains(got, "old") {
		t.Errorf("since: %q", got)
	}
	if got, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: -1, Since: time.Now().Add(time.Hour)}); got != "" {
		t.Errorf("since the future: %q", got)
	}
	if got, _ := collect(t, l, logger.ReadRequest{Container: c, Tail: -1, Since: mark.Add(-time.Hour)}); !strings.HasPrefix(got, "old 1\n") {
		t.Errorf("since long ago: %q", got)
	}
}

package filelog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/internal/sandboxfs"
	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// hostCanary is a host file that no read may return and no write change.
func hostCanary(t *testing.T) (string, func()) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p, func() {
		t.Helper()
		if b, err := os.ReadFile(p); err != nil || string(b) != "host secret\n" {
			t.Fatalf("host file changed: %q, %v", b, err)
		}
	}
}

// readWithin reads like collect but fails the test if Read has not returned
// within 10s (a reader hung on a FIFO or a lock), and returns Read's error.
func readWithin(t *testing.T, ctx context.Context, l *Logger, req logger.ReadRequest) (string, error) {
	t.Helper()
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		var b strings.Builder
		err := l.Read(ctx, req, func(c logger.Chunk) error { b.Write(c.Data); return nil })
		done <- result{b.String(), err}
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-time.After(10 * time.Second):
		t.Fatal("Read hung")
		return "", nil
	}
}

// The container replaces its stdout (or a rotated file) with a link to a
// host file, a FIFO or a device: `gearbox logs` returns an error, never the
// host file's content, and never hangs (issue 12).
func TestReadNeverFollowsWhatTheContainerPlants(t *testing.T) {
	host, intact := hostCanary(t)
	for name, plant := range map[string]func(string) error{
		"symlink":    func(p string) error { return os.Symlink(host, p) },
		"fifo":       func(p string) error { return syscall.Mkfifo(p, 0o666) },
		"device":     func(p string) error { return syscall.Mknod(p, syscall.S_IFCHR|0o666, 1<<8|3) },
		"dir":        func(p string) error { return os.Mkdir(p, 0o755) },
		"linked dir": func(p string) error { return os.Symlink(filepath.Dir(host), p) },
	} {
		for _, file := range []string{"stdout", "stdout.1"} {
			l, c := setup(t, true, logger.Options{MaxSize: 1024, MaxFiles: 3})
			os.WriteFile(filepath.Join(c.Sandbox, "stderr"), nil, 0o644)
			os.WriteFile(filepath.Join(c.Sandbox, "stdout"), []byte("mine\n"), 0o644)
			p := filepath.Join(c.Sandbox, file)
			os.Remove(p)
			if err := plant(p); err != nil {
				t.Fatal(err)
			}
			for _, req := range []logger.ReadRequest{{Tail: -1}, {Tail: 5}, {Since: time.Now().Add(-time.Hour)}} {
				req.Container = c
				req.Streams = []logger.Stream{logger.Stdout}
				out, err := readWithin(t, context.Background(), l, req)
				if strings.Contains(out, "secret") {
					t.Fatalf("%s at %s: Read returned the host file", name, file)
				}
				if file == "stdout" && err == nil {
					t.Errorf("%s at stdout: Read succeeded with %q, want an error", name, out)
				}
				if file == "stdout.1" && (err != nil || out != "mine\n") {
					t.Errorf("%s at stdout.1: Read = %q, %v; want the live file only", name, out, err)
				}
			}
		}
	}
	intact()
}

// A nested container's sandbox is in its parent's, which the parent
// container writes: a link planted on the way is refused, and nothing is
// created outside.
func TestNestedSandboxBehindALink(t *testing.T) {
	host, intact := hostCanary(t)
	l, c := setup(t, false, logger.Options{})
	if err := os.Symlink(filepath.Dir(host), filepath.Join(c.Sandbox, "containers")); err != nil {
		t.Fatal(err)
	}
	nested := c
	nested.ID, nested.Sandbox = "c.child", filepath.Join(c.Sandbox, "containers", "child")
	os.MkdirAll(filepath.Join(filepath.Dir(host), "child"), 0o755)
	if _, err := l.Prepare(context.Background(), nested); !errors.Is(err, sandboxfs.ErrUnsafePath) {
		t.Errorf("Prepare through a link: %v, want ErrUnsafePath", err)
	}
	if _, err := readWithin(t, context.Background(), l, logger.ReadRequest{Container: nested, Tail: -1}); !errors.Is(err, sandboxfs.ErrUnsafePath) {
		t.Errorf("Read through a link: %v, want ErrUnsafePath", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(filepath.Dir(host), "child")); len(ents) != 0 {
		t.Errorf("files created outside the sandbox: %v", ents)
	}
	outside := c
	outside.Sandbox = filepath.Dir(host)
	if _, err := l.Prepare(context.Background(), outside); err == nil {
		t.Error("Prepare accepted a sandbox outside the sandboxes directory")
	}
	intact()
}

// The rotation lock is host-only: no container can hold it, or point its
// logger at another container's (issue 12, item 3). A reader that still
// finds it held (a rotation stuck on a hung disk) waits only as long as its
// request's context.
func TestReaderWaitsForTheLockOnlyUntilItsDeadline(t *testing.T) {
	l, c := setup(t, true, logger.Options{MaxSize: 1024, MaxFiles: 3})
	out, wait := startWriter(t, l, c)
	fmt.Fprintln(out, "hello")
	wait()
	lockPath := shimlog.ChainLockPath(l.stateDir(c), "stdout")
	if rel, err := filepath.Rel(c.Sandbox, lockPath); err == nil && filepath.IsLocal(rel) {
		t.Fatalf("the rotation lock %s is in the sandbox", lockPath)
	}
	f, err := os.Open(lockPath)
	if err != nil {
		t.Fatalf("the writer made no rotation lock in the state directory: %v", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := readWithin(t, ctx, l, logger.ReadRequest{Container: c, Tail: -1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Read with the lock held: %v, want the deadline", err)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	if got, err := readWithin(t, context.Background(), l, logger.ReadRequest{Container: c, Tail: -1, Streams: []logger.Stream{logger.Stdout}}); err != nil || got != "hello\n" {
		t.Errorf("Read once the lock is free = %q, %v", got, err)
	}
}

// A follow of a container whose output never ends stops with its context.
func TestFollowStopsWithItsContext(t *testing.T) {
	l, c := setup(t, false, logger.Options{})
	out, wait := startWriter(t, l, c)
	defer wait()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				fmt.Fprintln(out, "more")
			}
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := readWithin(t, ctx, l, logger.ReadRequest{Container: c, Tail: -1, Follow: true}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("follow: %v, want the deadline", err)
	}
}

// The container replaces its stdout (or a rotated file) with a huge sparse
// file: every read stops at the rotating logger's max-size (plus a line's
// slack), and the tail scan looks at no more than that, so `gearbox logs`
// neither streams gigabytes of zeros nor scans until its deadline.
func TestReadIsBoundedOnAHugeFile(t *testing.T) {
	const maxSize = 1024
	for _, file := range []string{"stdout", "stdout.1"} {
		l, c := setup(t, true, logger.Options{MaxSize: maxSize, MaxFiles: 3})
		os.WriteFile(filepath.Join(c.Sandbox, "stderr"), nil, 0o644)
		os.WriteFile(filepath.Join(c.Sandbox, "stdout"), []byte("mine\n"), 0o644)
		f, err := os.Create(filepath.Join(c.Sandbox, file))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(20 << 30); err != nil { // sparse: no disk used
			t.Fatal(err)
		}
		f.Close()
		for _, req := range []logger.ReadRequest{{Tail: -1}, {Tail: 5}, {Tail: 0}, {Since: time.Now().Add(-time.Hour)}} {
			req.Container = c
			req.Streams = []logger.Stream{logger.Stdout}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			start := time.Now()
			out, err := readWithin(t, ctx, l, req)
			cancel()
			if err != nil {
				t.Errorf("%s, %+v: %v", file, req, err)
			}
			// A rotated file larger than the logger writes is skipped.
			if file == "stdout.1" && req.Tail != 0 && out != "mine\n" {
				t.Errorf("%s, %+v: read %q, want %q", file, req, clip(out), "mine\n")
			}
			// At most two files of the chain, each capped.
			if max := 3 * (maxSize + lineSlack); len(out) > max {
				t.Errorf("%s, %+v: read %d bytes, want at most %d", file, req, len(out), max)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("%s, %+v: took %v", file, req, d)
			}
		}
	}
}

// The unrotated sandbox logger's file is unbounded by design, but its tail
// scan is bounded: a huge file of zeros (no newline) stops the scan after
// sandboxScan bytes, long before the deadline.
func TestTailScanIsBoundedUnrotated(t *testing.T) {
	l, c := setup(t, false, logger.Options{})
	os.WriteFile(filepath.Join(c.Sandbox, "stderr"), nil, 0o644)
	f, err := os.Create(filepath.Join(c.Sandbox, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(20 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	dir, err := l.openSandbox(c)
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	idx, off, err := tailStart(ctx, dir, chain("stdout", 1), 5, 0)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(20<<30 - sandboxScan); idx != 0 || off != want {
		t.Errorf("tail starts at file %d offset %d, want 0 offset %d", idx, off, want)
	}
}

func clip(s string) string {
	if len(s) > 64 {
		return fmt.Sprintf("%q… (%d bytes)", s[:64], len(s))
	}
	return s
}

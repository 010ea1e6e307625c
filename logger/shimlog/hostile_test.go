package shimlog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// canary is a host file outside the sandbox that must never change.
func canary(t *testing.T) (path string, intact func()) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte("host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, func() {
		t.Helper()
		if b, err := os.ReadFile(path); err != nil || string(b) != "host\n" {
			t.Fatalf("host file changed: %q, %v", b, err)
		}
	}
}

func lines(from, to int) []byte {
	var b bytes.Buffer
	for i := from; i < to; i++ {
		fmt.Fprintf(&b, "line %04d\n", i)
	}
	return b.Bytes()
}

// A rotation whose rename fails is retried (every second in production)
// until it succeeds. Each retry must finish the same shift, not shift the
// kept files again: the files kept afterwards are those of a rotation that
// never failed (issue 12, item 10).
func TestFailedRotationIsResumedNotRepeated(t *testing.T) {
	const max, files = 100, 5
	input := lines(0, 60) // 10-byte lines: 6 rotations
	want, wdir := testRotator(t, max, files)
	want.writeRetrying(input)
	want.close()

	w, dir := testRotator(t, max, files)
	w.retry = time.Millisecond
	failures := 0
	w.rename = func(oldName, newName string) error {
		// The third rotation fails three times after its first step.
		if oldName == "stdout.1" && failures < 3 && w.inoAt("stdout.3") != 0 {
			failures++
			return fmt.Errorf("rename %s: %w", oldName, syscall.EIO)
		}
		return w.dir.Rename(oldName, newName)
	}
	w.writeRetrying(input)
	w.close()
	if failures != 3 {
		t.Fatalf("the rename failed %d times, want 3", failures)
	}
	for k := range files {
		name := w.chainName(k)
		got, _ := os.ReadFile(filepath.Join(dir, name))
		exp, _ := os.ReadFile(filepath.Join(wdir, name))
		if !bytes.Equal(got, exp) {
			t.Errorf("%s after failed rotations = %q, want %q", name, got, exp)
		}
	}
}

// What a container plants at the names of the chain is never followed:
// links are moved or replaced, a FIFO does not block, a directory does not
// stop rotation, and the host file is untouched.
func TestRotationAmongPlantedLinks(t *testing.T) {
	host, intact := canary(t)
	w, dir := testRotator(t, 100, 5)
	w.retry = time.Millisecond
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Symlink(host, filepath.Join(dir, "stdout.1")))
	must(os.Mkdir(filepath.Join(dir, "stdout.2"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "stdout.2", "f"), nil, 0o644))
	must(syscall.Mkfifo(filepath.Join(dir, "stdout.3"), 0o666))
	must(os.Symlink(filepath.Dir(host), filepath.Join(dir, "stdout.4")))
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.writeRetrying(lines(0, 100))
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the writer blocked among planted files")
	}
	w.close()
	intact()
	b, err := os.ReadFile(filepath.Join(dir, "stdout"))
	if err != nil || !strings.HasSuffix(string(b), "line 0099\n") {
		t.Fatalf("live file %q, %v", b, err)
	}
}

// The container replaces the live file with a link to a host file: the
// logger notices within a second, makes a file of its own again and keeps
// the output there.
func TestLiveFileReplacedByLink(t *testing.T) {
	host, intact := canary(t)
	for _, plant := range []func(string) error{
		func(p string) error { return os.Symlink(host, p) },
		func(p string) error { return os.Link(host, p) },
		func(p string) error { return syscall.Mkfifo(p, 0o666) },
		func(p string) error { return os.Mkdir(p, 0o755) },
	} {
		w, dir := testRotator(t, 0, 1)
		w.writeRetrying([]byte("before\n"))
		live := filepath.Join(dir, "stdout")
		os.Remove(live)
		if err := plant(live); err != nil {
			t.Fatal(err)
		}
		w.lastCheck = 0 // a second has passed
		w.writeRetrying([]byte("after\n"))
		w.close()
		intact()
		b, err := os.ReadFile(live)
		if err != nil || string(b) != "after\n" {
			t.Errorf("live file %q, %v; want the output after the swap", b, err)
		}
	}
}

// The sandbox itself swapped for a link: the logger refuses it, says so in
// its status, and writes nothing anywhere.
func TestRunRefusesALinkedSandbox(t *testing.T) {
	host, intact := canary(t)
	a := testArgs(t)
	os.Remove(filepath.Join(a.Root, "c"))
	if err := os.Symlink(filepath.Dir(host), filepath.Join(a.Root, "c")); err != nil {
		t.Fatal(err)
	}
	if st := Run(a, strings.NewReader("out\n"), strings.NewReader("err\n"), nil); st != 1 {
		t.Fatalf("status %d, want 1", st)
	}
	intact()
	if ents, _ := os.ReadDir(filepath.Dir(host)); len(ents) != 1 {
		t.Errorf("files created beside the host file: %v", ents)
	}
	b, _ := os.ReadFile(filepath.Join(a.State, StatusFile))
	if !strings.Contains(string(b), "link") {
		t.Errorf("status %q does not report the link", b)
	}
}

// gearbox's bookkeeping is not in the sandbox: names the old logger used
// there (.stdout.lock, .stdout.times, .stdout.times.tmp) are never touched,
// whatever they point at.
func TestBookkeepingIsNotInTheSandbox(t *testing.T) {
	host, intact := canary(t)
	a := testArgs(t)
	a.MaxSize, a.MaxFiles = 100, 3
	sb := filepath.Join(a.Root, a.Sandbox)
	for _, n := range []string{".stdout.lock", ".stdout.times", ".stdout.times.tmp", ".stderr.lock", "status"} {
		if err := os.Symlink(host, filepath.Join(sb, n)); err != nil {
			t.Fatal(err)
		}
	}
	if st := Run(a, bytes.NewReader(lines(0, 200)), strings.NewReader(""), nil); st != 0 {
		t.Fatalf("status %d", st)
	}
	intact()
	for _, n := range []string{"stdout.times", "stdout.lock"} {
		if _, err := os.Stat(filepath.Join(a.State, n)); err != nil {
			t.Errorf("%s not in the state directory: %v", n, err)
		}
	}
	if fi, err := os.Stat(a.State); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("state directory %v, %v; want mode 0700", fi, err)
	}
	ents, _ := os.ReadDir(sb)
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "std") && e.Type()&os.ModeSymlink == 0 {
			t.Errorf("the logger left %s in the sandbox", e.Name())
		}
	}
}

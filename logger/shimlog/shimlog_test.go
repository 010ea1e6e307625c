package shimlog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseArgs(t *testing.T) {
	a, err := ParseArgs([]string{"state", "/run/gearbox/loggers/ns.c", "sandbox", "c/containers/d", "root", "/var/lib/gearbox/sandboxes"})
	if err != nil || a.Root != "/var/lib/gearbox/sandboxes" || a.Sandbox != "c/containers/d" || a.State != "/run/gearbox/loggers/ns.c" {
		t.Fatalf("got %+v, %v", a, err)
	}
	ok := []string{"root", "/r", "sandbox", "c", "state", "/s"}
	for _, bad := range [][]string{{"root"}, {"root", "/r"}, append(ok, "x", "y"),
		// The old arguments named paths in the sandbox: no longer accepted.
		append(ok, "stdout", "/r/c/stdout"),
		{"root", "/r", "sandbox", "../etc", "state", "/s"}, {"root", "/r", "sandbox", "/etc", "state", "/s"},
		{"root", "/r", "sandbox", "c/../../etc", "state", "/s"}, {"root", "r", "sandbox", "c", "state", "/s"}} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}

type closer struct{ closed bool }

func (c *closer) Close() error { c.closed = true; return nil }

// testArgs makes a sandboxes root with sandbox "c" in it and a state
// directory, as the agent does.
func testArgs(t *testing.T) Args {
	t.Helper()
	a := Args{Root: t.TempDir(), Sandbox: "c", State: filepath.Join(t.TempDir(), "ns.c"), MaxFiles: 1, Mode: ModeBlock}
	if err := os.Mkdir(filepath.Join(a.Root, "c"), 0o755); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRunCopiesBothStreamsAndAppends(t *testing.T) {
	a := testArgs(t)
	stdout, stderr := filepath.Join(a.Root, "c", "stdout"), filepath.Join(a.Root, "c", "stderr")
	os.WriteFile(stdout, []byte("before\n"), 0o640)
	big := strings.Repeat("x", 300*1024) + "\n"
	var ready closer
	if st := Run(a, strings.NewReader("out\n"+big), strings.NewReader("err\n"), &ready); st != 0 {
		t.Fatalf("status %d", st)
	}
	if !ready.closed {
		t.Error("ready was not closed")
	}
	out, _ := os.ReadFile(stdout)
	if want := "before\nout\n" + big; string(out) != want {
		t.Errorf("stdout has %d bytes, want %d", len(out), len(want))
	}
	errb, _ := os.ReadFile(stderr)
	if string(errb) != "err\n" {
		t.Errorf("stderr = %q", errb)
	}
}

func TestRunDrainsWhenFileCannotOpen(t *testing.T) {
	a := testArgs(t)
	a.Sandbox = "missing"
	r := io.MultiReader(bytes.NewReader(make([]byte, 1<<20)))
	if st := Run(a, r, strings.NewReader("e"), nil); st != 1 {
		t.Fatalf("status %d, want 1", st)
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("root /r sandbox c state /s")
	f.Add("root /r sandbox ../c state /s")
	f.Add("stdout")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(strings.Fields(s))
		if err == nil && (a.Root == "" || a.State == "" || !filepath.IsLocal(a.Sandbox)) {
			t.Fatalf("accepted %q: %+v", s, a)
		}
	})
}

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
	a, err := ParseArgs([]string{"stderr", "/e", "stdout", "/o"})
	if err != nil || a.Stdout != "/o" || a.Stderr != "/e" {
		t.Fatalf("got %+v, %v", a, err)
	}
	for _, bad := range [][]string{{"stdout"}, {"stdout", "/o"}, {"stdout", "/o", "stderr", "/e", "x", "y"}} {
		if _, err := ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}

type closer struct{ closed bool }

func (c *closer) Close() error { c.closed = true; return nil }

func TestRunCopiesBothStreamsAndAppends(t *testing.T) {
	dir := t.TempDir()
	a := Args{Stdout: filepath.Join(dir, "stdout"), Stderr: filepath.Join(dir, "stderr")}
	os.WriteFile(a.Stdout, []byte("before\n"), 0o640)
	big := strings.Repeat("x", 300*1024) + "\n"
	var ready closer
	if st := Run(a, strings.NewReader("out\n"+big), strings.NewReader("err\n"), &ready); st != 0 {
		t.Fatalf("status %d", st)
	}
	if !ready.closed {
		t.Error("ready was not closed")
	}
	out, _ := os.ReadFile(a.Stdout)
	if want := "before\nout\n" + big; string(out) != want {
		t.Errorf("stdout has %d bytes, want %d", len(out), len(want))
	}
	errb, _ := os.ReadFile(a.Stderr)
	if string(errb) != "err\n" {
		t.Errorf("stderr = %q", errb)
	}
}

func TestRunDrainsWhenFileCannotOpen(t *testing.T) {
	a := Args{Stdout: "/nonexistent/dir/stdout", Stderr: filepath.Join(t.TempDir(), "stderr")}
	r := io.MultiReader(bytes.NewReader(make([]byte, 1<<20)))
	if st := Run(a, r, strings.NewReader("e"), nil); st != 1 {
		t.Fatalf("status %d, want 1", st)
	}
}

func FuzzParseArgs(f *testing.F) {
	f.Add("stdout /o stderr /e")
	f.Add("stdout")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseArgs(strings.Fields(s))
		if err == nil && (a.Stdout == "" || a.Stderr == "") {
			t.Fatalf("accepted %q without both paths", s)
		}
	})
}

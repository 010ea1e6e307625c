package shimlog

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
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
	// What the agent passes, whole and in parts.
	f.Add("stdout /o stderr /e")
	f.Add("stdout /sb/stdout stderr /sb/stderr max-size 10485760 max-files 5 mode drop lock /sb/.lock status /sb/.status")
	f.Add("stderr /e stdout /o mode block max-files 1000 max-size 0")
	f.Add("stdout /o stderr /e max-files 0 max-size -1 mode lossy")
	f.Add("stdout")
	f.Fuzz(func(t *testing.T, s string) {
		words := strings.Fields(s)
		a, err := ParseArgs(words)
		if err != nil {
			return
		}
		if a.Stdout == "" || a.Stderr == "" {
			t.Fatalf("accepted %q without both paths", s)
		}
		if a.MaxSize < 0 || a.MaxFiles < 1 || a.MaxFiles > 1000 || (a.Mode != ModeBlock && a.Mode != ModeDrop) {
			t.Fatalf("accepted %q as %+v", s, a)
		}
		// Every value given is the one kept (the last, for a repeated key).
		for i := 0; i+1 < len(words); i += 2 {
			last := ""
			for j := i; j+1 < len(words); j += 2 {
				if words[j] == words[i] {
					last = words[j+1]
				}
			}
			got := map[string]string{"stdout": a.Stdout, "stderr": a.Stderr, "mode": a.Mode, "lock": a.Lock, "status": a.Status,
				"max-size": strconv.FormatInt(a.MaxSize, 10), "max-files": strconv.Itoa(a.MaxFiles)}[words[i]]
			if n, err := strconv.ParseInt(last, 10, 64); err == nil && (words[i] == "max-size" || words[i] == "max-files") {
				last = strconv.FormatInt(n, 10) // "+5" and "05" are 5
			}
			if got != last {
				t.Fatalf("accepted %q: %s is %q, want %q", s, words[i], got, last)
			}
		}
	})
}

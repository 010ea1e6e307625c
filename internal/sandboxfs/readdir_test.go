package sandboxfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadDirDescribesWithoutFollowing(t *testing.T) {
	h := newHostile(t)
	must(t, unix.Mkfifo(filepath.Join(h.root, "fifo"), 0o644))
	es, err := h.d.ReadDir(".", 100)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]uint32{}
	var names []string
	for _, e := range es {
		got[e.Name] = e.Stat.Mode & unix.S_IFMT
		names = append(names, e.Name)
	}
	want := map[string]uint32{"stdout": unix.S_IFREG, "dir": unix.S_IFDIR, "filelink": unix.S_IFLNK, "dirlink": unix.S_IFLNK, "fifo": unix.S_IFIFO}
	for n, m := range want {
		if got[n] != m {
			t.Errorf("%s: type %o, want %o (listing %v)", n, got[n], m, names)
		}
	}
	if !sortedStrings(names) {
		t.Errorf("listing not sorted: %v", names)
	}
	// The symlink to the host's secret is described as a link: its size is
	// the target's name, not the secret's.
	for _, e := range es {
		if e.Name == "filelink" && e.Stat.Size != int64(len(h.canary)) {
			t.Errorf("filelink size %d: the link was followed", e.Stat.Size)
		}
	}
	sub, err := h.d.ReadDir("dir", 100)
	if err != nil || len(sub) != 1 || sub[0].Name != "file" {
		t.Errorf("ReadDir(dir) = %v, %v; want [file]", sub, err)
	}
}

func TestReadDirRefusesEscapes(t *testing.T) {
	h := newHostile(t)
	for _, name := range []string{"dirlink", "dirlink/", "../host", "/etc", "dir/../../host"} {
		if _, err := h.d.ReadDir(name, 100); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("ReadDir(%q) = %v, want ErrUnsafePath", name, err)
		}
	}
	if _, err := h.d.ReadDir("stdout", 100); !errors.Is(err, ErrNotDir) {
		t.Errorf("ReadDir(stdout) = %v, want ErrNotDir", err)
	}
	if _, err := h.d.ReadDir("missing", 100); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadDir(missing) = %v, want not exist", err)
	}
	long := strings.Repeat("a/", 3000)
	if _, err := h.d.ReadDir(long, 100); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("ReadDir(%d bytes) = %v, want ENAMETOOLONG", len(long), err)
	}
}

func TestReadDirBounded(t *testing.T) {
	h := newHostile(t)
	for i := range 20 {
		must(t, os.WriteFile(filepath.Join(h.root, "dir", "f"+string(rune('a'+i))), nil, 0o644))
	}
	if _, err := h.d.ReadDir("dir", 10); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadDir over the limit = %v, want ErrTooLarge", err)
	}
}

func TestDescribe(t *testing.T) {
	h := newHostile(t)
	st, err := h.d.Describe("filelink")
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("Describe(filelink) = %o, %v; want a symlink", st.Mode, err)
	}
	if _, err := h.d.Describe("dirlink/secret"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Describe through a link = %v, want ErrUnsafePath", err)
	}
}

func sortedStrings(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i-1] > s[i] {
			return false
		}
	}
	return true
}

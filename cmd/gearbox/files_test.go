package main

import (
	"testing"

	"golang.org/x/sys/unix"
)

func TestSplitFileArg(t *testing.T) {
	for in, want := range map[string][2]string{"web": {"web", ""}, "web:stdout": {"web", "stdout"}, "p.c:a/b:c": {"p.c", "a/b:c"}} {
		id, p, err := splitFileArg(in, false)
		if err != nil || id != want[0] || p != want[1] {
			t.Errorf("splitFileArg(%q) = %q, %q, %v", in, id, p, err)
		}
	}
	for _, bad := range []string{"", ":stdout"} {
		if _, _, err := splitFileArg(bad, false); err == nil {
			t.Errorf("splitFileArg(%q) accepted", bad)
		}
	}
	if _, _, err := splitFileArg("web", true); err == nil {
		t.Error("cat without a path accepted")
	}
}

func TestModeString(t *testing.T) {
	for m, want := range map[uint32]string{
		unix.S_IFREG | 0o644:  "-rw-r--r--",
		unix.S_IFDIR | 0o755:  "drwxr-xr-x",
		unix.S_IFLNK | 0o777:  "lrwxrwxrwx",
		unix.S_IFIFO | 0o600:  "prw-------",
		unix.S_IFCHR | 0o666:  "crw-rw-rw-",
		unix.S_IFSOCK | 0o755: "srwxr-xr-x",
	} {
		if got := modeString(m); got != want {
			t.Errorf("modeString(%o) = %q, want %q", m, got, want)
		}
	}
}

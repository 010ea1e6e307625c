package containerd

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPrivateDirTightensAnOlderAgentsDirs(t *testing.T) {
	root := t.TempDir()
	old := filepath.Join(root, "work")
	if err := os.Mkdir(old, 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(old, 0o711) // as agents before this one made it
	for _, d := range []string{old, filepath.Join(old, "sandboxes")} {
		if err := privateDir(d, slog.New(slog.DiscardHandler)); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Lstat(d)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: mode %v, want a directory with 0700", d, fi.Mode())
		}
	}
}

func TestPrivateDirRefusesASymlink(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "elsewhere")
	os.Mkdir(target, 0o755)
	link := filepath.Join(root, "sandboxes")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := privateDir(link, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("privateDir accepted a symlink in place of the sandboxes directory")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
		t.Errorf("the symlink's target was changed to %v", fi.Mode().Perm())
	}
}

func TestSandboxIsTheContainerUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown needs root; the integration suite checks a non-root container writes its sandbox")
	}
	dir := filepath.Join(t.TempDir(), "ctr")
	if err := makeSandbox(dir); err != nil {
		t.Fatal(err)
	}
	if err := chownSandbox(dir, 1234, 5678); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 1234 || st.Gid != 5678 || fi.Mode().Perm() != 0o700 {
		t.Errorf("sandbox is %d:%d %v, want 1234:5678 0700", st.Uid, st.Gid, fi.Mode().Perm())
	}
	// Taking over a leftover sandbox of the same ID resets its owner.
	if err := makeSandbox(dir); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Lstat(dir); fi.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Errorf("a reused sandbox kept its former owner")
	}
}

func TestChownSandboxRefusesASymlink(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "host")
	os.Mkdir(target, 0o755)
	link := filepath.Join(root, "ctr")
	os.Symlink(target, link)
	if err := chownSandbox(link, 0, 0); err == nil {
		t.Fatal("chownSandbox followed a symlink")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
		t.Errorf("the symlink's target was changed to %v", fi.Mode().Perm())
	}
}

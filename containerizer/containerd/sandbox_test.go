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
		if err := privateDir(d, false, slog.New(slog.DiscardHandler)); err != nil {
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
	if err := privateDir(link, false, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("privateDir accepted a symlink in place of the sandboxes directory")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o755 {
		t.Errorf("the symlink's target was changed to %v", fi.Mode().Perm())
	}
	// A work dir the operator made a link to another disk is followed.
	if err := privateDir(link, true, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("a linked work dir: %v", err)
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o700 {
		t.Errorf("a linked work dir's target is %v, want 0700", fi.Mode().Perm())
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

// canaryDir is a host directory outside the sandbox, with a file in it.
func canaryDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(t.TempDir(), "host")
	if err := os.MkdirAll(filepath.Join(d, "child"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(d, "child", "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func checkCanary(t *testing.T, d string) {
	t.Helper()
	if b, err := os.ReadFile(filepath.Join(d, "child", "keep")); err != nil || string(b) != "keep" {
		t.Errorf("the host directory's file is gone or changed: %q %v", b, err)
	}
	if es, _ := os.ReadDir(d); len(es) != 1 {
		t.Errorf("the host directory has %d entries, want 1", len(es))
	}
}

func TestNestedDirNeverFollowsTheParentsLinks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(sandbox, host string) error
	}{
		{"containers is a link", func(sb, host string) error { return os.Symlink(host, filepath.Join(sb, "containers")) }},
		{"containers/child is a link", func(sb, host string) error {
			os.Mkdir(filepath.Join(sb, "containers"), 0o755)
			return os.Symlink(filepath.Join(host, "child"), filepath.Join(sb, "containers", "child"))
		}},
		{"containers is a file", func(sb, host string) error {
			return os.WriteFile(filepath.Join(sb, "containers"), nil, 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sb, host := t.TempDir(), canaryDir(t)
			if err := tc.plant(sb, host); err != nil {
				t.Fatal(err)
			}
			err := makeNestedDir(sb, "child")
			if err == nil {
				t.Fatal("a nested container's directory was made through what the parent planted")
			}
			t.Log(err)
			checkCanary(t, host)
			// Removing the child's directory removes the link, not its target.
			if err := removeNestedDir(sb, "child"); err != nil {
				t.Log(err)
			}
			checkCanary(t, host)
		})
	}
}

func TestNestedDirMadeAndRemoved(t *testing.T) {
	sb := t.TempDir()
	if err := makeNestedDir(sb, "child"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(sb, "containers", "child")); err != nil || !fi.IsDir() {
		t.Fatalf("containers/child: %v %v", fi, err)
	}
	// A child's output links to a host dir: removal unlinks, never follows.
	host := canaryDir(t)
	os.Symlink(host, filepath.Join(sb, "containers", "child", "stdout"))
	if err := removeNestedDir(sb, "child"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(sb, "containers", "child")); !os.IsNotExist(err) {
		t.Errorf("containers/child survived its removal: %v", err)
	}
	checkCanary(t, host)
	if err := removeNestedDir(filepath.Join(sb, "gone"), "child"); err != nil {
		t.Errorf("removing from a sandbox that is gone: %v", err)
	}
}

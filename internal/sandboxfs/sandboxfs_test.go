package sandboxfs

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostile builds a root (the "sandbox") and, beside it, a host directory
// with a canary file, and returns the root's handle.
type hostile struct {
	root, host, canary string
	d                  *Dir
}

const canaryText = "host secret\n"

func newHostile(t testing.TB) *hostile {
	t.Helper()
	base := t.TempDir()
	h := &hostile{root: filepath.Join(base, "sandbox"), host: filepath.Join(base, "host")}
	h.canary = filepath.Join(h.host, "secret")
	for _, p := range []string{h.root, h.host, filepath.Join(h.root, "dir")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.WriteFile(h.canary, []byte(canaryText), 0o600))
	must(t, os.WriteFile(filepath.Join(h.root, "stdout"), []byte("out\n"), 0o644))
	must(t, os.WriteFile(filepath.Join(h.root, "dir", "file"), []byte("in dir\n"), 0o644))
	must(t, os.Symlink(h.canary, filepath.Join(h.root, "filelink")))
	must(t, os.Symlink(h.host, filepath.Join(h.root, "dirlink")))
	must(t, os.Symlink("../host/secret", filepath.Join(h.root, "rellink")))
	d, err := OpenDir(h.root)
	must(t, err)
	t.Cleanup(func() { d.Close() })
	h.d = d
	return h
}

// intact fails the test if anything in the host directory changed.
func (h *hostile) intact(t testing.TB) {
	t.Helper()
	b, err := os.ReadFile(h.canary)
	if err != nil || string(b) != canaryText {
		t.Fatalf("host canary changed: %q, %v", b, err)
	}
	ents, err := os.ReadDir(h.host)
	if err != nil || len(ents) != 1 {
		t.Fatalf("host directory changed: %v entries, %v", len(ents), err)
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestLinksAreNeverFollowed(t *testing.T) {
	h := newHostile(t)
	for _, name := range []string{"filelink", "rellink", "dirlink/secret", "dirlink/new", "dirlink/../sandbox/stdout"} {
		for op, open := range map[string]func() (*os.File, error){
			"read":   func() (*os.File, error) { return h.d.OpenRead(name) },
			"append": func() (*os.File, error) { return h.d.OpenAppend(name, 0o644) },
			"create": func() (*os.File, error) { return h.d.Create(name, 0o644) },
		} {
			f, err := open()
			if err == nil {
				f.Close()
				t.Fatalf("%s %q: opened through a link", op, name)
			}
			if !errors.Is(err, ErrUnsafePath) && !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s %q: %v, want ErrUnsafePath or ErrNotRegular", op, name, err)
			}
		}
	}
	if _, err := h.d.Sub("dirlink"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Sub(dirlink): %v, want ErrUnsafePath", err)
	}
	if _, err := h.d.MkdirAll("dirlink/a/b", 0o755); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("MkdirAll(dirlink/a/b): %v, want ErrUnsafePath", err)
	}
	if err := h.d.Rename("stdout", "dirlink/stolen"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Rename into dirlink: %v, want ErrUnsafePath", err)
	}
	if err := h.d.Remove("dirlink/secret"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Remove(dirlink/secret): %v, want ErrUnsafePath", err)
	}
	fi, err := h.d.Lstat("filelink")
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		t.Errorf("Lstat(filelink) = %v, %v; want the symlink itself", fi, err)
	}
	if _, err := h.d.Stat("dirlink/secret"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Stat(dirlink/secret): %v, want ErrUnsafePath", err)
	}
	// Removing a link removes the link, not its target.
	must(t, h.d.Remove("filelink"))
	h.intact(t)
}

func TestNamesRefusedBeforeTheKernel(t *testing.T) {
	h := newHostile(t)
	for _, name := range []string{"", "..", "../host/secret", "dir/../../host/secret", "/etc/passwd", h.canary, "a\x00b"} {
		if _, err := h.d.OpenRead(name); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("OpenRead(%q): %v, want ErrUnsafePath", name, err)
		}
		if _, err := h.d.Create(name, 0o644); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("Create(%q): %v, want ErrUnsafePath", name, err)
		}
		if err := h.d.RemoveAll(name); !errors.Is(err, ErrUnsafePath) {
			t.Errorf("RemoveAll(%q): %v, want ErrUnsafePath", name, err)
		}
	}
	h.intact(t)
}

func TestMagicLinksRefused(t *testing.T) {
	f, err := os.Open(os.Args[0])
	must(t, err)
	defer f.Close()
	proc, err := OpenDir("/proc/" + strconv.Itoa(os.Getpid()))
	must(t, err)
	defer proc.Close()
	if g, err := proc.OpenRead("fd/" + strconv.Itoa(int(f.Fd()))); !errors.Is(err, ErrUnsafePath) {
		if g != nil {
			g.Close()
		}
		t.Errorf("OpenRead(fd/N): %v, want ErrUnsafePath", err)
	}
	if _, err := proc.Sub("root/etc"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("Sub(root/etc): %v, want ErrUnsafePath", err)
	}
	if g, err := proc.OpenRead("cwd/go.mod"); !errors.Is(err, ErrUnsafePath) {
		if g != nil {
			g.Close()
		}
		t.Errorf("OpenRead(cwd/...): %v, want ErrUnsafePath", err)
	}
}

// within fails the test if call has not returned in 10s: an open that
// blocks (a FIFO) would otherwise hang the test until its timeout.
func within(t *testing.T, what string, call func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- call() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s blocked", what)
		return nil
	}
}

func TestSpecialFilesNotOpened(t *testing.T) {
	h := newHostile(t)
	must(t, unix.Mkfifo(filepath.Join(h.root, "fifo"), 0o666))
	must(t, unix.Mknod(filepath.Join(h.root, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(t, unix.Mknod(filepath.Join(h.root, "blk"), unix.S_IFBLK|0o666, int(unix.Mkdev(7, 0))))
	for _, name := range []string{"fifo", "null", "blk", "dir"} {
		for op, open := range map[string]func() (*os.File, error){
			"read":   func() (*os.File, error) { return h.d.OpenRead(name) },
			"append": func() (*os.File, error) { return h.d.OpenAppend(name, 0o644) },
			"create": func() (*os.File, error) { return h.d.Create(name, 0o644) },
		} {
			err := within(t, op+" "+name, func() error {
				f, err := open()
				if f != nil {
					f.Close()
				}
				return err
			})
			if !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s %q: %v, want ErrNotRegular", op, name, err)
			}
		}
		if _, err := h.d.ReadFileLimit(name, 1<<20); !errors.Is(err, ErrNotRegular) {
			t.Errorf("ReadFileLimit(%q): %v, want ErrNotRegular", name, err)
		}
	}
	if _, err := h.d.Sub("stdout"); !errors.Is(err, ErrNotDir) {
		t.Errorf("Sub(stdout): %v, want ErrNotDir", err)
	}
}

func TestHardLinkNotWritten(t *testing.T) {
	h := newHostile(t)
	must(t, os.Link(h.canary, filepath.Join(h.root, "stderr")))
	for _, open := range []func() (*os.File, error){
		func() (*os.File, error) { return h.d.OpenAppend("stderr", 0o644) },
		func() (*os.File, error) { return h.d.Create("stderr", 0o644) },
		func() (*os.File, error) { return h.d.Open("stderr", os.O_RDWR, 0) },
	} {
		if f, err := open(); !errors.Is(err, ErrHardLinked) {
			if f != nil {
				f.Close()
			}
			t.Errorf("write open of a hard link: %v, want ErrHardLinked", err)
		}
	}
	h.intact(t)
}

func TestDirectorySwappedForLink(t *testing.T) {
	h := newHostile(t)
	sub, err := h.d.Sub("dir")
	must(t, err)
	defer sub.Close()
	// The container moves the directory away and plants a link in its place.
	must(t, os.Rename(filepath.Join(h.root, "dir"), filepath.Join(h.root, "moved")))
	must(t, os.Symlink(h.host, filepath.Join(h.root, "dir")))
	if _, err := h.d.OpenAppend("dir/secret", 0o644); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("OpenAppend(dir/secret) after swap: %v, want ErrUnsafePath", err)
	}
	// The handle opened before still names the directory, wherever it went.
	f, err := sub.OpenAppend("secret", 0o644)
	must(t, err)
	f.Close()
	if _, err := os.Stat(filepath.Join(h.root, "moved", "secret")); err != nil {
		t.Errorf("write through the old handle did not land in the moved directory: %v", err)
	}
	must(t, h.d.RemoveAll("dir"))
	h.intact(t)
}

func TestRemoveAllNeverLeavesTheTree(t *testing.T) {
	h := newHostile(t)
	tree, err := h.d.MkdirAll("tree/a/b", 0o755)
	must(t, err)
	defer tree.Close()
	must(t, os.Symlink(h.host, filepath.Join(h.root, "tree", "a", "hostdir")))
	must(t, os.Symlink(h.canary, filepath.Join(h.root, "tree", "a", "b", "hostfile")))
	must(t, unix.Mkfifo(filepath.Join(h.root, "tree", "fifo"), 0o666))
	f, err := tree.Create("f", 0o644)
	must(t, err)
	f.Close()
	// Deeper than the descriptors RemoveAll keeps open at once.
	deep := filepath.Join(h.root, "tree")
	for i := range 3*maxDepth + 5 {
		deep = filepath.Join(deep, "d"+strconv.Itoa(i%10))
	}
	must(t, os.MkdirAll(deep, 0o755))
	must(t, os.Symlink(h.host, filepath.Join(deep, "hostdir")))
	if err := within(t, "RemoveAll", func() error { return h.d.RemoveAll("tree") }); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(h.root, "tree")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("tree still there: %v", err)
	}
	h.intact(t)
	must(t, h.d.RemoveAll("tree")) // missing is not an error
	must(t, h.d.RemoveAll("dirlink"))
	h.intact(t)
}

func TestRemoveAllStopsAtMountPoint(t *testing.T) {
	h := newHostile(t)
	mnt := filepath.Join(h.root, "dir", "mnt")
	must(t, os.Mkdir(mnt, 0o755))
	must(t, unix.Mount("tmpfs", mnt, "tmpfs", 0, ""))
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	must(t, os.WriteFile(filepath.Join(mnt, "keep"), nil, 0o644))
	if err := h.d.RemoveAll("dir"); !errors.Is(err, ErrUnsafePath) {
		t.Errorf("RemoveAll across a mount point: %v, want ErrUnsafePath", err)
	}
	if _, err := os.Stat(filepath.Join(mnt, "keep")); err != nil {
		t.Errorf("file on the mount removed: %v", err)
	}
}

func TestReadFileLimit(t *testing.T) {
	h := newHostile(t)
	data := bytes.Repeat([]byte("x"), 100_000)
	must(t, os.WriteFile(filepath.Join(h.root, "big"), data, 0o644))
	if _, err := h.d.ReadFileLimit("big", 99_999); !errors.Is(err, ErrTooLarge) {
		t.Errorf("ReadFileLimit over the limit: %v, want ErrTooLarge", err)
	}
	got, err := h.d.ReadFileLimit("big", 100_000)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("ReadFileLimit at the limit: %d bytes, %v", len(got), err)
	}
	if _, err := h.d.ReadFileLimit("missing", 10); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadFileLimit(missing): %v, want ErrNotExist", err)
	}
}

func TestCreateRenameRemove(t *testing.T) {
	h := newHostile(t)
	f, err := h.d.OpenAppend("dir/new", 0o640)
	must(t, err)
	_, err = f.WriteString("hello\n")
	must(t, err)
	f.Close()
	fi, err := h.d.Stat("dir/new")
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o640&^umask() || fi.Size() != 6 {
		t.Fatalf("Stat(dir/new) = %v, %v", fi, err)
	}
	if _, err := h.d.Open("dir/new", os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); !errors.Is(err, fs.ErrExist) {
		t.Errorf("O_EXCL on an existing file: %v, want ErrExist", err)
	}
	if err := h.d.RenameNoReplace("dir/new", "stdout"); !errors.Is(err, fs.ErrExist) {
		t.Errorf("RenameNoReplace onto stdout: %v, want ErrExist", err)
	}
	must(t, h.d.Rename("dir/new", "stdout.1"))
	got, err := h.d.ReadFileLimit("stdout.1", 100)
	if err != nil || string(got) != "hello\n" {
		t.Errorf("after rename: %q, %v", got, err)
	}
	must(t, h.d.Remove("stdout.1"))
	must(t, h.d.Remove("dir/file"))
	must(t, h.d.Remove("dir"))
	if _, err := h.d.Lstat("dir"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("dir still there: %v", err)
	}
	h.intact(t)
}

func umask() os.FileMode {
	m := unix.Umask(0)
	unix.Umask(m)
	return os.FileMode(m)
}

// FuzzResolve tries names against a tree holding links to a host directory
// and file: whatever the name and operation, nothing outside the root is
// opened, created, written or removed, and every file opened is inside it.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{"stdout", "filelink", "dirlink/secret", "dirlink/x", "../host/secret",
		"dir/../../host/secret", "/etc/passwd", "dir/./file", "rellink", "dir//file", ".", "dir/", "dirlink/.",
		"dir/../filelink", "./dirlink/../host", strings.Repeat("a/", 100)} {
		for op := range uint8(8) {
			f.Add(s, op)
		}
	}
	f.Fuzz(func(t *testing.T, name string, op uint8) {
		h := newHostile(t)
		var opened *os.File
		switch op % 8 {
		case 0:
			opened, _ = h.d.OpenRead(name)
		case 1:
			opened, _ = h.d.OpenAppend(name, 0o644)
			if opened != nil {
				opened.WriteString("pwned\n")
			}
		case 2:
			opened, _ = h.d.Create(name, 0o644)
		case 3:
			if d, err := h.d.MkdirAll(name, 0o755); err == nil {
				opened = d.f
			}
		case 4:
			h.d.RemoveAll(name)
		case 5:
			h.d.Remove(name)
		case 6:
			h.d.Rename("stdout", name)
			h.d.Rename(name, "moved")
		case 7:
			h.d.ReadFileLimit(name, 1<<20)
			h.d.Stat(name)
		}
		if opened != nil {
			target, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(int(opened.Fd())))
			opened.Close()
			if err != nil || (target != h.root && !strings.HasPrefix(target, h.root+"/")) {
				t.Fatalf("op %d on %q opened %q (%v), outside %s", op%8, name, target, err, h.root)
			}
		}
		h.intact(t)
	})
}

package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/gearboxd/gearbox/internal/containerdproc"
	"github.com/gearboxd/gearbox/internal/demoimage"
)

// smallAgent is a second agent on a private containerd whose root is a
// small loop-mounted ext4 filesystem.
type smallAgent struct {
	dir, root, sock, cfg string
	cd                   *containerdproc.Proc
	cmd                  *exec.Cmd
	done                 chan struct{}
}

func sh(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s (the image GC test needs e2fsprogs and loop devices: hack/install-deps.sh test)", name, strings.Join(args, " "), err, out)
	}
}

func newSmallAgent(t *testing.T, size string) *smallAgent {
	t.Helper()
	a := &smallAgent{dir: filepath.Join(h.dir, "small")}
	a.root = filepath.Join(a.dir, "containerd", "root")
	img := filepath.Join(a.dir, "fs.img")
	if err := os.MkdirAll(a.root, 0o711); err != nil {
		t.Fatal(err)
	}
	sh(t, "truncate", "-s", size, img)
	sh(t, "mkfs.ext4", "-q", "-F", img)
	sh(t, "mount", "-o", "loop", img, a.root)
	t.Cleanup(func() {
		if a.cd != nil {
			a.cd.Stop()
		}
		containerdproc.UnmountUnder(a.root)
		unix.Unmount(a.root, unix.MNT_DETACH)
	})
	var err error
	if a.cd, err = containerdproc.Start(context.Background(), filepath.Join(a.dir, "containerd")); err != nil {
		t.Fatal(err)
	}
	a.sock = filepath.Join(a.dir, "run", "agent.sock")
	a.cfg = filepath.Join(a.dir, "agent.toml")
	cfg := fmt.Sprintf("version = 1\ncontainerd_address = %q\nnamespace = \"gearbox-gc-%d\"\nwork_dir = %q\nrun_dir = %q\nlisten = \"unix://%s\"\nlogger_binary = %q\nresources = \"cpus:1;mem:512\"\n",
		a.cd.Address, os.Getpid(), filepath.Join(a.dir, "work"), filepath.Join(a.dir, "run"), a.sock, filepath.Join(h.bin, "gearbox-logger"))
	if err := os.WriteFile(a.cfg, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return a
}

func (a *smallAgent) start(t *testing.T, args ...string) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(a.dir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	a.cmd = exec.Command(filepath.Join(h.bin, "gearbox"), append([]string{"agent", "--config", a.cfg}, args...)...)
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	a.done = make(chan struct{})
	go func(c *exec.Cmd, done chan struct{}) { c.Wait(); close(done) }(a.cmd, a.done)
	t.Cleanup(a.stop)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r := a.cli("version"); r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the small agent did not start:\n%s", tail(filepath.Join(a.dir, "agent.log"), 20))
		}
	}
}

func (a *smallAgent) stop() {
	if a.cmd != nil && a.cmd.Process != nil {
		a.cmd.Process.Signal(syscall.SIGTERM)
		<-a.done
		a.cmd = nil
	}
}

func (a *smallAgent) cli(args ...string) result {
	return h.cli(append([]string{"--agent", "unix://" + a.sock}, args...)...)
}

// usage is the used percentage of the small filesystem.
func (a *smallAgent) usage(t *testing.T) float64 {
	var st unix.Statfs_t
	if err := unix.Statfs(a.root, &st); err != nil {
		t.Fatal(err)
	}
	return 100 * float64(st.Blocks-st.Bavail) / float64(st.Blocks)
}

// importBig imports a copy of the test image with a layer of n random
// bytes, named name.
func (a *smallAgent) importBig(t *testing.T, name string, n int64) {
	t.Helper()
	l, err := random.Layer(n, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(h.img, l)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(a.dir, strings.NewReplacer("/", "_", ":", "_").Replace(name)+".tar")
	if err := writeFile(p, func(f *os.File) error { return demoimage.WriteDockerArchive(f, img, name) }); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	if r := a.cli("image", "import", p); r.code != 0 {
		t.Fatalf("import %s: %s", name, r)
	}
}

// Filling the image filesystem past the high threshold frees it down to
// the low one, least recently used first, and never removes an image a
// container uses.
func TestImageGCOnSmallFilesystem(t *testing.T) {
	a := newSmallAgent(t, "400M")
	a.start(t)
	const layer = 16 << 20
	before := a.usage(t)
	for _, n := range []string{"localhost/gc-a:1", "localhost/gc-b:1", "localhost/gc-c:1", "localhost/gc-d:1"} {
		a.importBig(t, n, layer)
		time.Sleep(50 * time.Millisecond) // distinct last-use times
	}
	if r := a.cli("run", "-d", "--name", "user", "localhost/gc-a:1", "true"); r.code != 0 {
		t.Fatal(r)
	}
	a.cli("wait", "user") // ended, but its record (and so its image's use) stays
	// gc-a was used last, yet is in use; gc-b, gc-c, gc-d follow in LRU order.
	a.stop()
	u := a.usage(t)
	per := (u - before) / 4
	if per < 2 {
		t.Fatalf("four %d MiB images took %.1f%% of the filesystem; expected more", layer>>20, u-before)
	}
	high, low := u+per/2, u-per/2
	a.start(t, "--image-gc-high-threshold", fmt.Sprint(high), "--image-gc-low-threshold", fmt.Sprint(low),
		"--image-gc-min-age", "0s", "--disk-watch-interval", "300ms")
	if r := a.cli("image", "ls"); strings.Count(r.stdout, "localhost/gc-") != 4 {
		t.Fatalf("below the high threshold, images went: %s", r)
	}
	// Fill past the high threshold with one image's worth of a file.
	filler := filepath.Join(a.root, "filler")
	sh(t, "dd", "if=/dev/urandom", "of="+filler, "bs=1M", fmt.Sprint("count=", int(2*layer>>20)), "status=none")
	defer os.Remove(filler)
	deadline := time.Now().Add(time.Minute)
	for a.usage(t) > low && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	ls := a.cli("image", "ls").stdout
	if got := a.usage(t); got > low {
		t.Errorf("usage %.1f%% after the GC, low threshold %.1f%% (high %.1f%%):\n%s", got, low, high, ls)
	}
	for n, want := range map[string]bool{"gc-a": true, "gc-b": false, "gc-c": false, "gc-d": true} {
		if strings.Contains(ls, "localhost/"+n+":1") != want {
			t.Errorf("%s kept: %v, want %v (the in-use gc-a stays; the two least recently used go; then usage is below low):\n%s", n, !want, want, ls)
		}
	}

	// PruneImages by hand: --keep is kept, an image in use always is.
	if r := a.cli("image", "prune", "--all", "--keep", "localhost/gc-d:1"); r.code != 0 || !strings.Contains(r.stdout, "0 image(s) removed") {
		t.Errorf("prune --all --keep gc-d: %s", r)
	}
	if r := a.cli("image", "prune", "--all"); r.code != 0 || !strings.Contains(r.stdout, "removed docker.io/localhost/gc-d:1") && !strings.Contains(r.stdout, "removed localhost/gc-d:1") {
		t.Errorf("prune --all: %s", r)
	}
	if ls := a.cli("image", "ls").stdout; !strings.Contains(ls, "localhost/gc-a:1") || strings.Contains(ls, "localhost/gc-d:1") {
		t.Errorf("after prune --all, want only the in-use gc-a:\n%s", ls)
	}
	a.cli("rm", "user")
	if r := a.cli("image", "prune", "--all"); !strings.Contains(r.stdout, "localhost/gc-a:1") {
		t.Errorf("prune --all once gc-a's container is removed: %s", r)
	}
}

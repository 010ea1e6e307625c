// Package containerdproc starts a private containerd: for gearbox dev when
// none answers, and for the integration tests. CRI is off so it starts fast
// and quietly; its dirs are the caller's.
package containerdproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"golang.org/x/sys/unix"
)

// Proc is a running private containerd.
type Proc struct {
	Address string
	Dir     string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when containerd has exited
	waitErr error
	logPath string
}

// Answers says whether a containerd answers at address.
func Answers(ctx context.Context, address string) bool {
	if _, err := os.Stat(address); err != nil {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := client.New(address, client.WithTimeout(2*time.Second))
	if err != nil {
		return false
	}
	defer c.Close()
	_, err = c.Version(ctx)
	return err == nil
}

// Start runs containerd with root, state and socket under dir and waits
// until it answers. Its log goes to dir/containerd.log.
func Start(ctx context.Context, dir string) (*Proc, error) {
	bin, err := exec.LookPath("containerd")
	if err != nil {
		return nil, errors.New("containerd is not installed: apt-get install containerd runc")
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	p := &Proc{Address: filepath.Join(dir, "containerd.sock"), Dir: dir, logPath: filepath.Join(dir, "containerd.log"), exited: make(chan struct{})}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(`version = 2
disabled_plugins = ["io.containerd.grpc.v1.cri"]
`), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	p.cmd = exec.Command(bin, "--config", cfg, "--root", filepath.Join(dir, "root"),
		"--state", filepath.Join(dir, "state"), "--address", p.Address)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the caller,
	// which stops containerd in order.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting containerd: %w", err)
	}
	go func() { p.waitErr = p.cmd.Wait(); close(p.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if Answers(ctx, p.Address) {
			return p, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("containerd exited at start (%v): %s", p.waitErr, p.LogTail(20))
		case <-ctx.Done():
			p.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.Stop()
			return nil, fmt.Errorf("containerd did not answer within 30s: %s", p.LogTail(20))
		}
	}
}

// LogTail returns the last n lines of containerd's log.
func (p *Proc) LogTail(n int) string {
	f, err := os.Open(p.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		lines = append(lines, s.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// Stop ends containerd (SIGTERM, then SIGKILL after 10 s) and unmounts
// whatever is left mounted under its dir.
func (p *Proc) Stop() error {
	p.terminate()
	return UnmountUnder(p.Dir)
}

// terminate ends containerd; it is idempotent.
func (p *Proc) terminate() {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
	}
}

// StopKeepMounts ends containerd and leaves the shims and the containers'
// mounts alone, as a crash or a package upgrade does; Start on the same dir
// brings it back.
func (p *Proc) StopKeepMounts() { p.terminate() }

// Restart stops containerd and starts it again on the same dirs, leaving
// the shims and the containers' mounts alone, as a package upgrade or a
// systemctl restart does.
func (p *Proc) Restart(ctx context.Context) error {
	p.terminate()
	np, err := Start(ctx, p.Dir)
	if err != nil {
		return err
	}
	*p = *np
	return nil
}

// UnmountUnder lazily unmounts every mount point below dir, deepest first.
func UnmountUnder(dir string) error {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	dir = filepath.Clean(dir) + "/"
	var points []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4]+"/", dir) {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	var errs []error
	for _, m := range points {
		if err := unix.Unmount(m, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", m, err))
		}
	}
	return errors.Join(errs...)
}

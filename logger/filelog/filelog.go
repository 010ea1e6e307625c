// Package filelog holds the built-in container loggers, both written by
// gearbox-logger (logger/shimlog), which the containerd shim runs:
//
//   - sandbox: stdout and stderr as plain, unbounded files in the sandbox,
//     as Mesos keeps them;
//   - logrotate: the same files, rotated by the writer the moment a size
//     limit is reached, on a line boundary, keeping a number of files
//     (stdout, stdout.1, …) so that tail -F works.
//
// Both read back the same way: by inode, following the rotation chain, so
// a follow crosses rotations with no gap and no duplicate.
//
// The sandbox is hostile ground (internal/sandboxfs): every file in it is
// opened beneath a handle to the sandbox, which is itself opened beneath the
// agent's sandboxes directory; the time index and the rotation lock are in a
// host-only state directory; and every wait (the rotation lock, a follow) is
// bounded by the request's context.
package filelog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/gearboxd/gearbox/internal/sandboxfs"
	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// Logger is a built-in file logger.
type Logger struct {
	// Binary is the absolute path of gearbox-logger.
	Binary string
	// Rotate makes it the logrotate logger; otherwise files are unbounded.
	Rotate bool
	// StateDir holds, per container, a host-only directory (0700) with the
	// logger's liveness lock, status, time indexes and rotation locks.
	StateDir string
	// Sandboxes is the agent's sandboxes directory (trusted): every
	// container's sandbox is opened beneath it. Empty (tests only): each
	// container's Sandbox itself is the trusted root.
	Sandboxes string
	// PollInterval is how often a follow looks for new output.
	PollInterval time.Duration
}

var _ logger.ContainerLogger = (*Logger)(nil)

// New returns a file logger that runs the given gearbox-logger binary for
// containers whose sandboxes are beneath the sandboxes directory.
func New(binary, stateDir, sandboxes string, rotate bool) (*Logger, error) {
	if !filepath.IsAbs(binary) {
		return nil, fmt.Errorf("logger binary %q must be an absolute path", binary)
	}
	st, err := os.Stat(binary)
	if err != nil {
		return nil, fmt.Errorf("logger binary: %w (build it with make build, or set logger_binary in the agent's config)", err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("logger binary %s is not an executable file", binary)
	}
	if !filepath.IsAbs(sandboxes) {
		return nil, fmt.Errorf("sandboxes directory %q must be an absolute path", sandboxes)
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	return &Logger{Binary: binary, Rotate: rotate, StateDir: stateDir, Sandboxes: sandboxes, PollInterval: 50 * time.Millisecond}, nil
}

// Path returns the live file a stream is kept in.
func Path(sandbox string, s logger.Stream) string {
	return filepath.Join(sandbox, s.String())
}

// stateDir is the container's host-only directory.
func (l *Logger) stateDir(c logger.Container) string {
	return filepath.Join(l.StateDir, c.Namespace+"."+c.ID)
}

// root and rel split a container's sandbox into the trusted root and the
// name of the sandbox beneath it.
func (l *Logger) rootRel(c logger.Container) (string, string, error) {
	if l.Sandboxes == "" {
		return c.Sandbox, ".", nil
	}
	rel, err := filepath.Rel(l.Sandboxes, c.Sandbox)
	if err != nil || rel == "." || !filepath.IsLocal(rel) {
		return "", "", fmt.Errorf("sandbox %s of container %s is not beneath the sandboxes directory %s", c.Sandbox, c.ID, l.Sandboxes)
	}
	return l.Sandboxes, rel, nil
}

// openSandbox opens the container's sandbox beneath the trusted root: a
// nested container's sandbox (ID/containers/CHILD) is in its parent's, which
// the parent container can write.
func (l *Logger) openSandbox(c logger.Container) (*sandboxfs.Dir, error) {
	root, rel, err := l.rootRel(c)
	if err != nil {
		return nil, err
	}
	r, err := sandboxfs.OpenDir(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Sub(rel)
}

func (l *Logger) files(c logger.Container) int {
	if !l.Rotate || c.Options.MaxFiles < 1 {
		return 1
	}
	return c.Options.MaxFiles
}

func (l *Logger) Prepare(ctx context.Context, c logger.Container) (cio.Creator, error) {
	root, rel, err := l.rootRel(c)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(l.stateDir(c), 0o700); err != nil {
		return nil, fmt.Errorf("preparing the logger state of container %s: %w", c.ID, err)
	}
	d, err := l.openSandbox(c)
	if err != nil {
		return nil, fmt.Errorf("preparing the output of container %s: %w", c.ID, err)
	}
	defer d.Close()
	for _, s := range []logger.Stream{logger.Stdout, logger.Stderr} {
		f, err := shimlog.OpenLive(d, s.String())
		if err != nil {
			return nil, fmt.Errorf("preparing %s of container %s: %w", s, c.ID, err)
		}
		f.Close()
	}
	args := map[string]string{"root": root, "sandbox": rel, "state": l.stateDir(c)}
	if l.Rotate && c.Options.MaxSize > 0 {
		args["max-size"] = strconv.FormatInt(c.Options.MaxSize, 10)
		args["max-files"] = strconv.Itoa(l.files(c))
	}
	if c.Options.Mode != "" {
		args["mode"] = c.Options.Mode
	}
	return cio.BinaryIO(l.Binary, args), nil
}

func (l *Logger) Recover(ctx context.Context, c logger.Container) error { return nil }

// statusLimit bounds what Check reads of the status file.
const statusLimit = 4096

// Check probes the logger's liveness lock (gearbox-logger holds it for its
// whole life) and reads its status file (write failures). Both are in the
// host-only state directory; the probe does not block.
func (l *Logger) Check(ctx context.Context, c logger.Container) error {
	state := l.stateDir(c)
	f, err := os.Open(filepath.Join(state, shimlog.LockFile))
	if errors.Is(err, os.ErrNotExist) {
		// A logger started by an agent before the per-container state
		// directory kept its lock and status beside it (also host-only).
		state = l.StateDir
		f, err = os.Open(filepath.Join(state, c.Namespace+"."+c.ID+".lock"))
	}
	if errors.Is(err, os.ErrNotExist) {
		return errors.New("gearbox-logger never started for this container: its output is not kept")
	}
	if err != nil {
		return fmt.Errorf("probing gearbox-logger: %w", err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err == nil {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return errors.New("gearbox-logger has exited while the container runs: new output is lost")
	}
	status := filepath.Join(state, shimlog.StatusFile)
	if state == l.StateDir {
		status = filepath.Join(state, c.Namespace+"."+c.ID+".status")
	}
	sf, err := os.Open(status)
	if err != nil {
		return nil
	}
	defer sf.Close()
	b, _ := io.ReadAll(io.LimitReader(sf, statusLimit))
	if msg := strings.TrimSpace(string(b)); msg != "" {
		return errors.New(msg)
	}
	return nil
}

// Cleanup removes the logger's state directory; the output goes with the
// sandbox.
func (l *Logger) Cleanup(ctx context.Context, c logger.Container) error {
	for _, p := range []string{".lock", ".status", ".status.tmp"} { // an older agent's
		if err := os.Remove(filepath.Join(l.StateDir, c.Namespace+"."+c.ID+p)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.RemoveAll(l.stateDir(c))
}

// chain lists a stream's file names, oldest first, the live one last.
func chain(name string, files int) []string {
	out := make([]string, 0, files)
	for k := files - 1; k >= 1; k-- {
		out = append(out, fmt.Sprintf("%s.%d", name, k))
	}
	return append(out, name)
}

// lockRetry is how often a reader tries the rotation lock again.
const lockRetry = 5 * time.Millisecond

// withChainLock runs fn holding the rotation lock shared, so that the
// writer does not shift the chain meanwhile. The lock is host-only (no
// container can hold it), and the wait for it is bounded by ctx.
func withChainLock(ctx context.Context, lockPath string, fn func() error) error {
	f, err := os.OpenFile(lockPath, os.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fn() // no logger ever rotated this stream
	}
	defer f.Close()
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK && err != syscall.EINTR {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the log rotation to finish: %w", ctx.Err())
		case <-time.After(lockRetry):
		}
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return fn()
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

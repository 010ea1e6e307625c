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
package filelog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// Logger is a built-in file logger.
type Logger struct {
	// Binary is the absolute path of gearbox-logger.
	Binary string
	// Rotate makes it the logrotate logger; otherwise files are unbounded.
	Rotate bool
	// StateDir holds each container's liveness lock and status file.
	StateDir string
	// PollInterval is how often a follow looks for new output.
	PollInterval time.Duration
}

var _ logger.ContainerLogger = (*Logger)(nil)

// New returns a file logger that runs the given gearbox-logger binary.
func New(binary, stateDir string, rotate bool) (*Logger, error) {
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
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, err
	}
	return &Logger{Binary: binary, Rotate: rotate, StateDir: stateDir, PollInterval: 50 * time.Millisecond}, nil
}

// Path returns the live file a stream is kept in.
func Path(sandbox string, s logger.Stream) string {
	return filepath.Join(sandbox, s.String())
}

func (l *Logger) lockPath(c logger.Container) string {
	return filepath.Join(l.StateDir, c.Namespace+"."+c.ID+".lock")
}

func (l *Logger) statusPath(c logger.Container) string {
	return filepath.Join(l.StateDir, c.Namespace+"."+c.ID+".status")
}

func (l *Logger) files(c logger.Container) int {
	if !l.Rotate || c.Options.MaxFiles < 1 {
		return 1
	}
	return c.Options.MaxFiles
}

func (l *Logger) Prepare(ctx context.Context, c logger.Container) (cio.Creator, error) {
	for _, s := range []logger.Stream{logger.Stdout, logger.Stderr} {
		f, err := os.OpenFile(Path(c.Sandbox, s), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("preparing %s of container %s: %w", s, c.ID, err)
		}
		f.Close()
	}
	args := map[string]string{
		"stdout": Path(c.Sandbox, logger.Stdout),
		"stderr": Path(c.Sandbox, logger.Stderr),
		"lock":   l.lockPath(c),
		"status": l.statusPath(c),
	}
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

// Check probes the logger's liveness lock (gearbox-logger holds it for its
// whole life) and reads its status file (write failures).
func (l *Logger) Check(ctx context.Context, c logger.Container) error {
	f, err := os.Open(l.lockPath(c))
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
	if b, err := os.ReadFile(l.statusPath(c)); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return errors.New(strings.TrimSpace(string(b)))
	}
	return nil
}

// Cleanup removes the logger's state files; the output goes with the sandbox.
func (l *Logger) Cleanup(ctx context.Context, c logger.Container) error {
	for _, p := range []string{l.lockPath(c), l.statusPath(c), l.statusPath(c) + ".tmp"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// chain lists a stream's files, oldest first, the live one last.
func chain(path string, files int) []string {
	out := make([]string, 0, files)
	for k := files - 1; k >= 1; k-- {
		out = append(out, fmt.Sprintf("%s.%d", path, k))
	}
	return append(out, path)
}

// withChainLock runs fn holding the rotation lock shared, so that the
// writer does not shift the chain meanwhile.
func withChainLock(path string, fn func() error) error {
	lp := shimlog.RotateLockPath(path)
	f, err := os.OpenFile(lp, os.O_CREATE|os.O_RDONLY, 0o600)
	if err != nil {
		return fn() // a read-only sandbox: read without the lock
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		return err
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

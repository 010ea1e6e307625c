// Package sandbox is the "sandbox" container logger: the container's stdout
// and stderr kept as plain, unbounded files named stdout and stderr in its
// sandbox, as Mesos does. The files are written by gearbox-logger, which the
// containerd shim runs, so output never depends on the agent process.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/gearboxd/gearbox/logger"
)

// Logger is the sandbox logger.
type Logger struct {
	// Binary is the absolute path of gearbox-logger.
	Binary string
	// PollInterval is how often a follow looks for new output.
	PollInterval time.Duration
}

var _ logger.ContainerLogger = (*Logger)(nil)

// New returns a sandbox logger that runs the given gearbox-logger binary.
func New(binary string) (*Logger, error) {
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
	return &Logger{Binary: binary, PollInterval: 50 * time.Millisecond}, nil
}

// Path returns the file a stream is kept in.
func Path(sandbox string, s logger.Stream) string {
	return filepath.Join(sandbox, s.String())
}

func (l *Logger) Prepare(ctx context.Context, c logger.Container) (cio.Creator, error) {
	for _, s := range []logger.Stream{logger.Stdout, logger.Stderr} {
		f, err := os.OpenFile(Path(c.Sandbox, s), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("preparing %s of container %s: %w", s, c.ID, err)
		}
		f.Close()
	}
	return cio.BinaryIO(l.Binary, map[string]string{
		"stdout": Path(c.Sandbox, logger.Stdout),
		"stderr": Path(c.Sandbox, logger.Stderr),
	}), nil
}

func (l *Logger) Recover(ctx context.Context, c logger.Container) error { return nil }

// Cleanup has nothing to do: the files go with the sandbox.
func (l *Logger) Cleanup(ctx context.Context, c logger.Container) error { return nil }

func (l *Logger) Read(ctx context.Context, req logger.ReadRequest, fn func(logger.Stream, []byte) error) error {
	streams := req.Streams
	if len(streams) == 0 {
		streams = []logger.Stream{logger.Stdout, logger.Stderr}
	}
	files := make([]*os.File, len(streams))
	for i, s := range streams {
		f, err := os.Open(Path(req.Container.Sandbox, s))
		if errors.Is(err, os.ErrNotExist) {
			continue // never written: nothing to read
		}
		if err != nil {
			return fmt.Errorf("reading %s of container %s: %w", s, req.Container.ID, err)
		}
		defer f.Close()
		files[i] = f
	}
	buf := make([]byte, 32*1024)
	readAll := func() (bool, error) {
		any := false
		for i, f := range files {
			if f == nil {
				continue
			}
			for {
				n, err := f.Read(buf)
				if n > 0 {
					any = true
					if err := fn(streams[i], buf[:n]); err != nil {
						return any, err
					}
				}
				if err == io.EOF || n == 0 {
					break
				}
				if err != nil {
					return any, fmt.Errorf("reading %s of container %s: %w", streams[i], req.Container.ID, err)
				}
			}
		}
		return any, nil
	}
	if !req.Follow {
		_, err := readAll()
		return err
	}
	interval := l.PollInterval
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if _, err := readAll(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-req.Done:
			_, err := readAll()
			return err
		case <-t.C:
		}
	}
}

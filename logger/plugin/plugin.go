// Package plugin runs a custom container logger: any executable that
// speaks containerd's binary logging protocol (stdout on fd 3, stderr on fd
// 4, close fd 5 when ready), named in the agent's config with its path and
// fixed arguments. Only configured loggers run: nothing from a request or
// an image ever becomes a program the shim starts.
package plugin

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/logger"
)

// Logger is one configured custom logger.
type Logger struct {
	Name string
	Path string
	Args map[string]string
}

var _ logger.ContainerLogger = (*Logger)(nil)

// New checks that path is an absolute, executable file.
func New(name, path string, args map[string]string) (*Logger, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("logger %q: path %q must be absolute", name, path)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("logger %q: %w", name, err)
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return nil, fmt.Errorf("logger %q: %s is not an executable file", name, path)
	}
	return &Logger{Name: name, Path: path, Args: args}, nil
}

func (l *Logger) Prepare(ctx context.Context, c logger.Container) (cio.Creator, error) {
	return cio.BinaryIO(l.Path, l.Args), nil
}

func (l *Logger) Recover(ctx context.Context, c logger.Container) error { return nil }

// Check cannot see into a custom logger; it answers for nothing.
func (l *Logger) Check(ctx context.Context, c logger.Container) error { return nil }

func (l *Logger) Cleanup(ctx context.Context, c logger.Container) error { return nil }

func (l *Logger) Read(ctx context.Context, req logger.ReadRequest, fn func(logger.Chunk) error) error {
	return errs.New(errdefs.ErrFailedPrecondition, "container %s logs to the %q logger, which keeps no copy gearbox can read: read its output where that logger sends it", req.Container.ID, l.Name)
}

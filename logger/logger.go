// Package logger holds the ContainerLogger contract: it prepares a
// container's IO before the container starts, owns the files its output is
// kept in, and reads them back. Implementations live in subpackages; the
// code behind the gearbox-logger binary is logger/shimlog.
package logger

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/cio"
)

// Container names what a logger needs to know of a container.
type Container struct {
	ID        string
	Namespace string
	// Sandbox is the container's sandbox directory on the host; output
	// files are kept there.
	Sandbox string
}

// Stream is one of a container's output streams.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

func (s Stream) String() string {
	switch s {
	case Stdout:
		return "stdout"
	case Stderr:
		return "stderr"
	}
	return "unknown"
}

// ReadRequest says what to read of a container's output.
type ReadRequest struct {
	Container Container
	Streams   []Stream // both when empty
	// Follow keeps reading new output until Done is closed; then what is
	// left is read and Read returns.
	Follow bool
	// Done is closed once the container's output is complete (its task is
	// deleted, so the logger process has drained and exited).
	Done <-chan struct{}
}

// ContainerLogger prepares and keeps a container's output. The output must
// not depend on the agent process: the shim runs the logger.
type ContainerLogger interface {
	// Prepare returns the IO for a container's task.
	Prepare(ctx context.Context, c Container) (cio.Creator, error)
	// Recover is called for a container found running when the agent starts.
	Recover(ctx context.Context, c Container) error
	// Cleanup removes what the logger keeps for a removed container. It is
	// idempotent.
	Cleanup(ctx context.Context, c Container) error
	// Read calls fn with the container's output, in order per stream.
	Read(ctx context.Context, req ReadRequest, fn func(Stream, []byte) error) error
}

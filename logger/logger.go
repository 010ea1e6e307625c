// Package logger holds the ContainerLogger contract: it prepares a
// container's IO before the container starts, owns the files its output is
// kept in, reads them back and says whether it is still working.
// Implementations live in subpackages: logger/filelog (the built-in sandbox
// and logrotate loggers), logger/plugin (custom loggers named in the agent's
// config); logger/shimlog is the code behind the gearbox-logger binary.
package logger

import (
	"context"
	"time"

	"github.com/containerd/containerd/v2/pkg/cio"
)

// Options tune a container's logger.
type Options struct {
	// MaxSize is the size at which a stream's live file is rotated (bytes);
	// 0 never rotates.
	MaxSize int64
	// MaxFiles is how many files a stream keeps, the live one included.
	MaxFiles int
	// Mode is the back-pressure policy: "block" (never lose a line) or
	// "drop" (never block the container; count and mark what is dropped).
	Mode string
}

// Container names what a logger needs to know of a container.
type Container struct {
	ID        string
	Namespace string
	// Sandbox is the container's sandbox directory on the host; output
	// files are kept there.
	Sandbox string
	Options Options
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
	// Cursor resumes where an earlier read stopped (a Chunk's Cursor).
	Cursor string
	// Tail, when >= 0, starts at the last Tail lines of each stream.
	Tail int
	// Since, when set, starts at the output written from that time on (to
	// the second).
	Since time.Time
	// Follow keeps reading new output until Done is closed; then what is
	// left is read and Read returns.
	Follow bool
	// Done is closed once the container's output is complete (its task is
	// deleted, so the logger process has drained and exited).
	Done <-chan struct{}
}

// Chunk is a piece of output and the cursor just after it.
type Chunk struct {
	Stream Stream
	Data   []byte
	Cursor string
}

// ContainerLogger prepares and keeps a container's output. The output must
// not depend on the agent process: the shim runs the logger.
type ContainerLogger interface {
	// Prepare returns the IO for a container's task.
	Prepare(ctx context.Context, c Container) (cio.Creator, error)
	// Recover is called for a container found running when the agent starts.
	Recover(ctx context.Context, c Container) error
	// Check says why the logger of a running container is not doing its
	// job (it died, it cannot write), or nil.
	Check(ctx context.Context, c Container) error
	// Cleanup removes what the logger keeps for a removed container. It is
	// idempotent.
	Cleanup(ctx context.Context, c Container) error
	// Read calls fn with the container's output, in order per stream.
	Read(ctx context.Context, req ReadRequest, fn func(Chunk) error) error
}

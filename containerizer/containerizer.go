// Package containerizer holds the Containerizer contract: how the agent
// launches, waits for, kills and removes containers, and manages the images
// they run. The containerd implementation lives in containerizer/containerd.
//
// Errors are containerd's errdefs classes (errdefs.ErrNotFound, …) wrapped
// with %w and a message a person can act on; the agent turns them into gRPC
// codes at its edge.
package containerizer

import (
	"context"
	"io"
	"syscall"
	"time"

	"github.com/gearboxd/gearbox/isolators"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// ContainerID names a container: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}.
type ContainerID string

// TaskState is the state of a container's task: the types.v1 enum, so that
// the containerizer, the agent and the master share one vocabulary.
type TaskState = typesv1.TaskState

// The states the containerizer gives a container. TaskState.Terminal says
// whether no further state can follow.
const (
	TaskStaging  = typesv1.TaskState_TASK_STAGING
	TaskStarting = typesv1.TaskState_TASK_STARTING
	TaskKilling  = typesv1.TaskState_TASK_KILLING
	TaskRunning  = typesv1.TaskState_TASK_RUNNING
	TaskFinished = typesv1.TaskState_TASK_FINISHED
	TaskFailed   = typesv1.TaskState_TASK_FAILED
	TaskKilled   = typesv1.TaskState_TASK_KILLED
	TaskLost     = typesv1.TaskState_TASK_LOST
	TaskGone     = typesv1.TaskState_TASK_GONE
)

// Reason says why a container reached its state: the types.v1 enum.
type Reason = typesv1.Reason

const (
	ReasonNone                  = typesv1.Reason_REASON_UNSPECIFIED
	ReasonCommandExited         = typesv1.Reason_REASON_COMMAND_EXITED
	ReasonCommandSignaled       = typesv1.Reason_REASON_COMMAND_SIGNALED
	ReasonTaskKilled            = typesv1.Reason_REASON_TASK_KILLED
	ReasonContainerLaunchFailed = typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED
	ReasonContainerVanished     = typesv1.Reason_REASON_CONTAINER_VANISHED
	ReasonAgentRestarted        = typesv1.Reason_REASON_AGENT_RESTARTED
	ReasonImagePullFailed       = typesv1.Reason_REASON_IMAGE_PULL_FAILED
	ReasonImageNotFound         = typesv1.Reason_REASON_IMAGE_NOT_FOUND
	ReasonImageAuthFailed       = typesv1.Reason_REASON_IMAGE_AUTH_FAILED
)

// LaunchFailure classifies why a container's command could not be started,
// so that clients can answer as Docker does (127: not found, 126: not
// executable).
type LaunchFailure string

const (
	LaunchFailureNone          LaunchFailure = ""
	LaunchFailureNotFound      LaunchFailure = typesv1.ErrorReasonCommandNotFound
	LaunchFailureNotExecutable LaunchFailure = typesv1.ErrorReasonCommandNotExecutable
)

// LaunchError is returned when a container was created but its command
// could not be started; Failure says whether it was not found or not
// executable, as Docker's 127 and 126.
type LaunchError struct {
	Failure LaunchFailure
	Err     error
}

func (e *LaunchError) Error() string { return e.Err.Error() }
func (e *LaunchError) Unwrap() error { return e.Err }

// LaunchConfig is what a container is launched from. Nil slices and nil
// pointers mean "as the image says".
type LaunchConfig struct {
	ID         ContainerID
	Image      string
	Entrypoint []string // nil: the image's; non-nil (even empty): replaces it and drops the image's cmd
	Cmd        []string // nil: the image's
	Env        []string // KEY=VALUE, added to and overriding the image's
	WorkingDir *string
	User       *string
	Runtime    string // profile name; "" for the default
	Labels     map[string]string
	AutoRemove bool
	Log        LogConfig // zero fields: the agent's defaults
	Privileged bool
	Resources  isolators.Resources
	// Stdin keeps the process's stdin open for AttachInput; TTY gives it a
	// terminal, whose output is kept as stdout.
	Stdin bool
	TTY   bool
	// Width and Height are the terminal's size at start (TTY only; zero:
	// none until the first resize).
	Width, Height uint32
	// KillGrace is the kill policy: a kill that names no signal sends
	// SIGTERM, then SIGKILL once this has passed (zero: SIGKILL at once).
	KillGrace time.Duration
	// Pull says when the image is pulled (zero: if it is not present);
	// Auth is the credential for its registry (nil: the agent's
	// registry_config). Neither is kept with the container.
	Pull PullPolicy
	Auth *RegistryAuth
	// PullProgress hears of a pull this launch waits for (maybe one that
	// another launch of the same image started); nil: nobody listens.
	PullProgress func(PullProgress) `json:"-"`
	// Restart says whether the process is started again when it ends.
	Restart RestartPolicy
	// Network is the network it joins; the zero value is the host's.
	Network isolators.Network
}

// RestartMode is Docker's --restart policy.
type RestartMode string

const (
	RestartNo            RestartMode = "no"
	RestartOnFailure     RestartMode = "on-failure"
	RestartAlways        RestartMode = "always"
	RestartUnlessStopped RestartMode = "unless-stopped"
)

// RestartPolicy says whether and when a container's process is started
// again when it ends (containerizer/restart decides). Zero durations and
// factor mean the defaults.
type RestartPolicy struct {
	Mode RestartMode `json:"mode,omitempty"` // "" is RestartNo
	// MaxRetries bounds the restarts of on-failure; 0: no bound.
	MaxRetries int `json:"max_retries,omitempty"`
	// The back-off: Delay, then Delay*Factor, … at most MaxDelay; a run of
	// ResetAfter or longer starts it again at Delay.
	Delay      time.Duration `json:"delay,omitempty"`
	Factor     float64       `json:"factor,omitempty"`
	MaxDelay   time.Duration `json:"max_delay,omitempty"`
	ResetAfter time.Duration `json:"reset_after,omitempty"`
}

// ProcessExit is how one process of a container ended: the state, reason
// and message it would have ended the container with.
type ProcessExit struct {
	ExitCode *int32    `json:"exit_code,omitempty"`
	State    TaskState `json:"state"`
	Reason   Reason    `json:"reason,omitempty"`
	Message  string    `json:"message,omitempty"`
	Time     time.Time `json:"time"`
}

// PullPolicy says when a launch pulls its image: the types.v1 enum.
type PullPolicy = typesv1.PullPolicy

const (
	PullIfNotPresent = typesv1.PullPolicy_PULL_IF_NOT_PRESENT
	PullAlways       = typesv1.PullPolicy_PULL_ALWAYS
	PullNever        = typesv1.PullPolicy_PULL_NEVER
)

// PullError is a launch's failure to get its image; Reason says which
// (REASON_IMAGE_NOT_FOUND, REASON_IMAGE_AUTH_FAILED, REASON_IMAGE_PULL_FAILED).
type PullError struct {
	Reason Reason
	Err    error
}

func (e *PullError) Error() string { return e.Err.Error() }
func (e *PullError) Unwrap() error { return e.Err }

// LogConfig chooses and tunes a container's logger.
type LogConfig struct {
	Driver   string // sandbox, logrotate or a configured custom logger
	MaxSize  int64  // logrotate: rotate at this size
	MaxFiles int    // logrotate: files kept per stream, the live one included
	Mode     string // block or drop
}

// Container is what the containerizer knows of one container.
type Container struct {
	ID          ContainerID
	Image       string
	ImageDigest string
	Runtime     string
	State       TaskState
	Reason      Reason
	Message     string
	ExitCode    *int32 // set when terminal and the process had started
	Pid         uint32
	CreatedAt   time.Time
	StartedAt   time.Time
	FinishedAt  time.Time
	Args        []string
	Env         []string
	WorkingDir  string
	User        string
	Sandbox     string
	Labels      map[string]string
	AutoRemove  bool
	Log         LogConfig
	// LoggingDegraded says why the logger is not doing its job, while that
	// lasts.
	LoggingDegraded string
	Privileged      bool
	Resources       isolators.Resources
	Stdin           bool
	TTY             bool
	KillGrace       time.Duration
	Pull            PullPolicy
	// ImageHealthcheck is the image's own HEALTHCHECK (Docker image
	// config), nil when it has none.
	ImageHealthcheck *ImageHealthcheck `json:",omitempty"`
	Restart          RestartPolicy
	// RestartCount counts the restarts of its process; LastExit is how the
	// last restarted one ended. While a restart waits for its back-off the
	// container is TaskStarting with NextRestartAt set, and RestartDelay is
	// that wait (the back-off goes on from it).
	RestartCount  int
	LastExit      *ProcessExit
	NextRestartAt time.Time
	RestartDelay  time.Duration
	// Network is the network it asked for; IPs its addresses on it.
	Network isolators.Network
	IPs     []string
}

// ImageHealthcheck is a Docker image config's Healthcheck. Test is
// ["CMD", args...], ["CMD-SHELL", command] or ["NONE"]; zero durations and
// retries mean Docker's defaults.
type ImageHealthcheck struct {
	Test        []string
	Interval    time.Duration
	Timeout     time.Duration
	StartPeriod time.Duration
	Retries     int
}

// KillRequest asks for a signal, and SIGKILL after Grace if Grace > 0 and the
// container still runs.
type KillRequest struct {
	Signal syscall.Signal
	Grace  time.Duration
	// Reason and Message, when set, say why the agent itself killed the
	// container (a failed health check): its terminal state carries them
	// instead of REASON_TASK_KILLED. An earlier kill's reason stands.
	Reason  Reason
	Message string
}

// Stream names one of a container's output streams.
type Stream int

const (
	Stdout Stream = 1
	Stderr Stream = 2
)

// LogsRequest says what to read of a container's output.
type LogsRequest struct {
	Streams []Stream // both when empty
	Follow  bool
	Cursor  string // resume after a chunk's cursor
	Tail    int    // last N lines of each stream; < 0: all
	Since   time.Time
}

// LogChunk is a piece of a container's output and the cursor after it.
type LogChunk struct {
	Stream Stream
	Data   []byte
	Cursor string
}

// ExecConfig is a command to run in a running container.
type ExecConfig struct {
	Args       []string
	Env        []string // KEY=VALUE, added to the container's
	User       *string  // uid[:gid]
	WorkingDir *string
	TTY        bool
	Width      uint32 // the terminal's size at start (TTY only)
	Height     uint32
	// Image, when set, makes a debug container: that image's root
	// filesystem in the container's pid, network and IPC namespaces, with a
	// cgroup of its own under the container's (Resources bound it). Args
	// empty: the image's entrypoint and cmd.
	Image     string
	Resources isolators.Resources
}

// NestedConfig is a nested container to run in a running one.
type NestedConfig struct {
	ID         ContainerID // parent.child
	Args       []string
	Env        []string
	User       *string // uid[:gid]
	WorkingDir *string
}

// NestedContainer is what the containerizer knows of a nested container.
type NestedContainer struct {
	ID         ContainerID
	Args       []string
	State      TaskState
	Reason     Reason
	Message    string
	ExitCode   *int32
	Pid        uint32
	StartedAt  time.Time
	FinishedAt time.Time
	// Sandbox holds its stdout and stderr files, inside the parent's.
	Sandbox string
}

// Attachment writes to the stdin of a container's main process.
type Attachment interface {
	io.Writer
	Resize(ctx context.Context, width, height uint32) error
	// CloseStdin ends the process's stdin (for a TTY: hangs it up).
	CloseStdin(ctx context.Context) error
	// Close lets go of the stdin; the process's stdin stays open.
	Close() error
}

// ExecIO connects an exec to its caller. Stdin may be nil.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Exec is a running command in a container.
type Exec interface {
	Resize(ctx context.Context, width, height uint32) error
	// Wait returns the exit status once the process has exited and its
	// output is copied.
	Wait(ctx context.Context) (int32, error)
	// Close kills the process if it still runs and removes every trace of
	// it (the exec, its FIFOs). It is idempotent.
	Close() error
}

// RegistryAuth is a credential for one registry, as Docker's config.json
// holds it.
type RegistryAuth struct {
	Username      string
	Password      string
	IdentityToken string
	RegistryToken string
}

// PullProgress reports the state of one layer of a pull.
type PullProgress struct {
	Digest    string
	MediaType string
	Status    string // waiting, downloading, exists, done, unpacking, unpacked
	Offset    int64
	Total     int64
}

// Image is an image in the containerizer's store.
type Image struct {
	Name      string
	Digest    string
	Size      int64
	CreatedAt time.Time
}

// Runtime is a runtime profile and whether it can run on this host.
type Runtime struct {
	Name              string
	Type              string
	Binary            string
	Available         bool
	UnavailableReason string
}

// Containers launches, watches and ends containers: the lifecycle the
// agent's admission, its Agent API handlers and its master client drive.
// Every method that blocks takes a context first.
type Containers interface {
	// CheckResources refuses values no isolator could honour, before a
	// launch is admitted; update says they are for a running container.
	CheckResources(r isolators.Resources, update bool) error
	// Launch creates and starts a container; it returns when the process
	// runs. A launch that fails after the container was created leaves it,
	// terminal, with ReasonContainerLaunchFailed.
	Launch(ctx context.Context, cfg LaunchConfig) (Container, error)
	// Wait blocks until the container is terminal.
	Wait(ctx context.Context, id ContainerID) (Container, error)
	Kill(ctx context.Context, id ContainerID, req KillRequest) error
	// Destroy removes a terminal container and its sandbox; with force it
	// kills a running one first.
	Destroy(ctx context.Context, id ContainerID, force bool) error
	Get(ctx context.Context, id ContainerID) (Container, error)
	Containers(ctx context.Context) ([]Container, error)
	// Logs copies the container's output to fn; with Follow it goes on until
	// the container is terminal and its output is complete.
	Logs(ctx context.Context, id ContainerID, req LogsRequest, fn func(LogChunk) error) error
	// Update changes a running container's resources in place; zero
	// fields are left as they are.
	Update(ctx context.Context, id ContainerID, r isolators.Resources) (Container, error)
	// Usage says what a running container uses.
	Usage(ctx context.Context, id ContainerID) (isolators.Usage, error)
}

// Images manages the images containers run.
type Images interface {
	Pull(ctx context.Context, ref string, auth *RegistryAuth, progress func(PullProgress)) (Image, error)
	Import(ctx context.Context, r io.Reader, name string) ([]Image, error)
	Images(ctx context.Context) ([]Image, error)
	RemoveImage(ctx context.Context, ref string, force bool) error
	// Tag gives the image src the further name dst (replacing an image of
	// that name).
	Tag(ctx context.Context, src, dst string) (Image, error)
	// Prune removes images no container uses (in any state, nested and
	// debug ones included), least recently used first, keeping those in
	// req.Keep; see PruneRequest.
	Prune(ctx context.Context, req PruneRequest) (PruneResult, error)
	// ImageFS is a directory on the filesystem images are stored on (the
	// image GC watches its usage).
	ImageFS(ctx context.Context) (string, error)
}

// PruneRequest says which images a prune may remove.
type PruneRequest struct {
	// Keep names images never removed.
	Keep []string
	// UnusedFor: only images not used (launched, pulled, imported) for at
	// least this long. Zero: any image no container uses.
	UnusedFor time.Duration
	// Enough, when set, is asked before each removal: true stops the
	// prune (the image GC's way down to its low threshold).
	Enough func() bool
}

// PruneResult is what a prune removed.
type PruneResult struct {
	Removed        []Image
	ReclaimedBytes int64
}

// Sessions runs things inside a running container: execs and debug
// containers, nested containers, and attachments to its main process's
// stdin.
type Sessions interface {
	// Exec runs a command in a running container, as docker exec.
	Exec(ctx context.Context, id ContainerID, cfg ExecConfig, eio ExecIO) (Exec, error)
	// AttachInput opens the stdin of a container launched with Stdin. One
	// attachment at a time.
	AttachInput(ctx context.Context, id ContainerID) (Attachment, error)
	// LaunchNested starts a nested container (parent.child) in a running
	// container: it shares the parent's namespaces and cgroup and ends with
	// it.
	LaunchNested(ctx context.Context, cfg NestedConfig) (NestedContainer, error)
	// WaitNested blocks until the nested container is terminal.
	WaitNested(ctx context.Context, id ContainerID) (NestedContainer, error)
	KillNested(ctx context.Context, id ContainerID, sig syscall.Signal) error
	// RemoveNested forgets a terminal nested container and removes its
	// output; with force it kills a running one first.
	RemoveNested(ctx context.Context, id ContainerID, force bool) error
}

// Host describes the containerizer's side of the node: its runtime
// profiles and whether the container engine answers.
type Host interface {
	Runtimes() []Runtime
	DefaultRuntime() string
	// Version is the container engine's version; it fails with
	// errdefs.ErrUnavailable when the engine does not answer.
	Version(ctx context.Context) (string, error)
}

// Containerizer is all of the above in one implementation, as the agent
// builds it at start.
type Containerizer interface {
	Containers
	Images
	Sessions
	Host
	// Close stops watching containers; it leaves them running.
	Close() error
}

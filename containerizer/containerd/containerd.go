// Package containerd is the Containerizer on containerd.
//
// The lifecycle of one container:
//
//	Launch ──► NewContainer (snapshot, spec, labels) ──► NewTask (logger IO)
//	       ──► Wait (before Start) ──► Start ──► TASK_RUNNING
//	exit   ──► task Delete (the shim drains and stops the logger, so the
//	           output files are complete) ──► terminal state written to the
//	           container's labels ──► waiters released ──► auto-remove
//	Destroy ─► container Delete (with its snapshot) ──► sandbox removed
//
// containerd is the store: every container carries labels with its gearbox
// ID, image, runtime and, once terminal, its state, reason and exit code, so
// a restarted agent rebuilds its view from containerd alone (Recover).
// Cancelling the containerizer's context (Close) detaches from containers;
// it never kills them.
package containerd

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/logger"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// RuntimeProfile is a runtime from the agent's config.
type RuntimeProfile struct {
	// Type is the containerd shim type, e.g. io.containerd.runc.v2.
	Type string
	// Binary is the OCI runtime binary the runc shim runs (runc, crun, a
	// path); empty for the shim's default.
	Binary string
}

// Config configures the containerizer.
type Config struct {
	Address        string
	Namespace      string
	WorkDir        string
	RunDir         string
	Snapshotter    string
	Runtimes       map[string]RuntimeProfile
	DefaultRuntime string
	// InsecureRegistries are hosts (host or host:port) spoken to over plain
	// HTTP. Loopback registries always are.
	InsecureRegistries []string
	// RegistryConfig is a Docker config.json whose credentials are used
	// when a pull brings none.
	RegistryConfig string
	// ImportMaxSize bounds an imported archive, as received and once
	// decompressed (bytes; 0: DefaultImportMaxSize); MaxImports bounds the
	// imports under way at once (0: DefaultMaxImports). images.go says why.
	ImportMaxSize int64
	MaxImports    int
	// Loggers by name (sandbox, logrotate, custom ones); LogDefaults.Driver
	// names the default and fills what a launch leaves out.
	Loggers     map[string]logger.ContainerLogger
	LogDefaults containerizer.LogConfig
	// LogLimits bound what a launch may ask (MaxSize, MaxFiles).
	LogLimits containerizer.LogConfig
	// AllowPrivileged lets a launch ask for a privileged container.
	AllowPrivileged bool
	// Isolators run in this order for every container.
	Isolators []isolators.Isolator
	// SystemdCgroup has runc create cgroups through systemd (a scope per
	// container in gearbox.slice) instead of writing cgroupfs directly.
	SystemdCgroup bool
	// HostMemory bounds a container's memory limit (bytes; 0: unchecked).
	HostMemory int64
	// Recovery says what to do with what containerd holds at start.
	Recovery Recovery
	// OnChange is told every change of a container's state, and its
	// removal, so that the agent can checkpoint it. It may be nil.
	OnChange func(c containerizer.Container, removed bool)
	Log      *slog.Logger
}

// Recovery is the agent's knowledge and policy for recovering containers.
type Recovery struct {
	// Known are the containers the agent's checkpoint holds.
	Known map[containerizer.ContainerID]containerizer.Container
	// KeepUnknown keeps containers of the namespace the checkpoint does not
	// know; by default they are destroyed.
	KeepUnknown bool
	// Rebooted says the host rebooted since the checkpoint was written:
	// no container survived.
	Rebooted bool
	// Cleanup kills and removes every container after recovery
	// (--recover=cleanup).
	Cleanup bool
}

// Containerizer runs containers through containerd.
type Containerizer struct {
	cfg      Config
	client   *client.Client
	log      *slog.Logger
	runtimes map[string]containerizer.Runtime

	ctx    context.Context // namespaced; cancelled by Close: detaches, kills nothing
	cancel context.CancelFunc
	wg     sync.WaitGroup

	metrics *metrics
	// execSlots bounds exec setups under way at once (execSlot).
	execSlots chan struct{}
	// importSlots bounds the imports under way at once (Import).
	importSlots chan struct{}
	// pulls are the pulls launches wait for (pullshare.go).
	pulls pullGroup
	// pruneMu makes prunes (the image GC's, PruneImages) one at a time.
	pruneMu sync.Mutex

	mu         sync.Mutex
	containers map[containerizer.ContainerID]*ctr
	// tombstones keep the last state of auto-removed containers so that a
	// Wait arriving just after the removal still gets its answer.
	tombstones map[containerizer.ContainerID]containerizer.Container
	tombOrder  []containerizer.ContainerID
}

const maxTombstones = 1024

// ctr is the containerizer's record of one container.
type ctr struct {
	mu      sync.Mutex
	info    containerizer.Container
	cont    client.Container      // nil while launching
	task    client.Task           // nil when no task runs
	killed  bool                  // a KillContainer was received
	limit   *isolators.Limitation // a limit that made the agent end it
	done    chan struct{}         // closed when terminal and output complete
	removed bool
	nested  map[string]*nested // by child name
	// attached: a client writes to the stdin (one at a time).
	attached bool

	// killReason and killMessage: why the agent itself killed it (a failed
	// health check), for its terminal state.
	killReason  containerizer.Reason
	killMessage string
	// restartStop is closed to end a restart that waits for its back-off
	// (restart.go); nil when none waits.
	restartStop chan struct{}
}

// loggerContainer is what the container's logger knows of it.
func (z *Containerizer) loggerContainer(info containerizer.Container) logger.Container {
	return logger.Container{
		ID: string(info.ID), Namespace: z.cfg.Namespace, Sandbox: info.Sandbox,
		Options: logger.Options{MaxSize: info.Log.MaxSize, MaxFiles: info.Log.MaxFiles, Mode: info.Log.Mode},
	}
}

// loggerOf returns the logger a container was launched with.
func (z *Containerizer) loggerOf(info containerizer.Container) (logger.ContainerLogger, error) {
	l, ok := z.cfg.Loggers[info.Log.Driver]
	if !ok {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "container %s was launched with logger %q, which this agent's config no longer has", info.ID, info.Log.Driver)
	}
	return l, nil
}

// changed tells the agent about a container's new state.
func (z *Containerizer) changed(info containerizer.Container, removed bool) {
	if z.cfg.OnChange != nil {
		z.cfg.OnChange(info, removed)
	}
}

func (c *ctr) snapshot() containerizer.Container {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info
}

// New connects to containerd, checks the runtime profiles and recovers the
// containers of the namespace. It fails when containerd cannot be reached.
func New(ctx context.Context, cfg Config) (*Containerizer, error) {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Snapshotter == "" {
		cfg.Snapshotter = "overlayfs"
	}
	if _, ok := cfg.Loggers[cfg.LogDefaults.Driver]; !ok {
		return nil, fmt.Errorf("default logger %q is not among the configured loggers", cfg.LogDefaults.Driver)
	}
	if _, ok := cfg.Runtimes[cfg.DefaultRuntime]; !ok {
		return nil, fmt.Errorf("default runtime %q is not among the configured runtimes", cfg.DefaultRuntime)
	}
	// The work dir and its sandboxes are root's alone (sandbox.go says why).
	if err := privateDir(cfg.WorkDir, true, cfg.Log); err != nil {
		return nil, err
	}
	if err := privateDir(filepath.Join(cfg.WorkDir, "sandboxes"), false, cfg.Log); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(cfg.RunDir, "tmp"), 0o711); err != nil {
		return nil, fmt.Errorf("creating %s: %w", filepath.Join(cfg.RunDir, "tmp"), err)
	}
	cl, err := client.New(cfg.Address, client.WithDefaultNamespace(cfg.Namespace), client.WithTimeout(10*time.Second))
	if err != nil {
		return nil, errs.New(errdefs.ErrUnavailable, "cannot reach containerd at %s: %v (is it running? systemctl start containerd)", cfg.Address, err)
	}
	nctx := namespaces.WithNamespace(ctx, cfg.Namespace)
	if _, err := cl.Version(nctx); err != nil {
		cl.Close()
		return nil, errs.New(errdefs.ErrUnavailable, "containerd at %s does not answer: %v", cfg.Address, err)
	}
	z := &Containerizer{
		cfg:        cfg,
		client:     cl,
		log:        cfg.Log,
		containers: map[containerizer.ContainerID]*ctr{},
		tombstones: map[containerizer.ContainerID]containerizer.Container{},
		metrics:    newMetrics(),
		execSlots:  make(chan struct{}, max(2, runtime.NumCPU())),
	}
	z.importSlots = make(chan struct{}, cmp.Or(cfg.MaxImports, DefaultMaxImports))
	if err := sweepImportSpool(cfg); err != nil {
		cl.Close()
		return nil, err
	}
	z.runtimes = checkRuntimes(cfg.Runtimes)
	for name, rt := range z.runtimes {
		if !rt.Available {
			z.log.Warn("runtime profile cannot run on this host", "runtime", name, "reason", rt.UnavailableReason)
		}
	}
	z.ctx, z.cancel = context.WithCancel(namespaces.WithNamespace(context.WithoutCancel(ctx), cfg.Namespace))
	if err := z.recover(nctx); err != nil {
		z.Close()
		return nil, err
	}
	z.recoverIsolators(nctx)
	z.wg.Add(1)
	go z.watchRunning()
	return z, nil
}

var _ containerizer.Containerizer = (*Containerizer)(nil)

// Version is containerd's version; it fails with errdefs.ErrUnavailable
// when containerd does not answer.
func (z *Containerizer) Version(ctx context.Context) (string, error) {
	v, err := z.client.Version(ctx)
	if err != nil {
		return "", errs.New(errdefs.ErrUnavailable, "containerd at %s does not answer: %v", z.cfg.Address, err)
	}
	return v.Version, nil
}

// Close stops watching containers and leaves them running.
func (z *Containerizer) Close() error {
	z.cancel()
	z.wg.Wait()
	return z.client.Close()
}

func (z *Containerizer) Runtimes() []containerizer.Runtime {
	out := make([]containerizer.Runtime, 0, len(z.runtimes))
	for _, rt := range z.runtimes {
		out = append(out, rt)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (z *Containerizer) DefaultRuntime() string { return z.cfg.DefaultRuntime }

func (z *Containerizer) sandboxDir(id containerizer.ContainerID) string {
	return filepath.Join(z.sandboxesDir(), string(id))
}

func (z *Containerizer) lookup(id containerizer.ContainerID) (*ctr, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	c, ok := z.containers[id]
	if !ok {
		return nil, errs.WithInfo(errs.New(errdefs.ErrNotFound, "container %q not found", id),
			typesv1.ErrorReasonContainerNotFound, "container_id", string(id))
	}
	return c, nil
}

func (z *Containerizer) Get(ctx context.Context, id containerizer.ContainerID) (containerizer.Container, error) {
	c, err := z.lookup(id)
	if err != nil {
		return containerizer.Container{}, err
	}
	return c.snapshot(), nil
}

func (z *Containerizer) Containers(ctx context.Context) ([]containerizer.Container, error) {
	z.mu.Lock()
	out := make([]containerizer.Container, 0, len(z.containers))
	for _, c := range z.containers {
		out = append(out, c.snapshot())
	}
	z.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// execSlot waits for a turn to set up an exec (create, start). runc's exec
// is CPU-bound (it re-enters the container's namespaces and loads seccomp):
// fifty at once on one container contend so badly on two cores that they
// take a minute, where fifty in turns take seconds. The wait ends with ctx.
func (z *Containerizer) execSlot(ctx context.Context) (release func(), err error) {
	select {
	case z.execSlots <- struct{}{}:
		return func() { <-z.execSlots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// opCtx gives an operation that must finish (cleanup, recording a state) its
// own deadline, detached from the caller's cancellation.
func (z *Containerizer) opCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(namespaces.WithNamespace(context.WithoutCancel(ctx), z.cfg.Namespace), d)
}

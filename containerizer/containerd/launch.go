package containerd

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/containerizer/restart"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/launchspec"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// SandboxMount is where a container sees its sandbox.
const SandboxMount = "/mnt/sandbox"

// validateLaunch checks everything about a request that needs no containerd.
func (z *Containerizer) validateLaunch(cfg *containerizer.LaunchConfig) error {
	if cfg.ID == "" {
		cfg.ID = containerizer.ContainerID(ids.New())
	}
	if err := ids.Validate(string(cfg.ID)); err != nil {
		return errs.New(errdefs.ErrInvalidArgument, "%w", err)
	}
	if err := launchspec.CheckEnv(cfg.Env); err != nil {
		return err
	}
	if err := launchspec.CheckLabels(cfg.Labels); err != nil {
		return err
	}
	if err := z.resolveLog(&cfg.Log); err != nil {
		return err
	}
	if err := restart.Validate(cfg.Restart); err != nil {
		return err
	}
	if cfg.AutoRemove && restart.Enabled(cfg.Restart) {
		return errs.New(errdefs.ErrInvalidArgument, "restart_policy %s with auto_remove: a container removed when it ends cannot be restarted; choose one", restart.String(cfg.Restart))
	}
	if err := z.CheckResources(cfg.Resources, false); err != nil {
		return err
	}
	if err := z.checkNetwork(cfg.Network); err != nil {
		return err
	}
	if cfg.Stdin && !cfg.TTY {
		// The shim wires a logger binary's container to stdin only through
		// a terminal.
		return errs.WithInfo(errs.New(errdefs.ErrInvalidArgument, "stdin without a terminal is not supported for a container's main process: set tty too, or give the command stdin in a session"),
			typesv1.ErrorReasonStdinNeedsTTY, "container_id", string(cfg.ID))
	}
	if cfg.Privileged && !z.cfg.AllowPrivileged {
		return errs.New(errdefs.ErrPermissionDenied, "privileged containers are not allowed on this agent (allow_privileged in its config)")
	}
	if cfg.Runtime == "" {
		cfg.Runtime = z.cfg.DefaultRuntime
	}
	rt, ok := z.runtimes[cfg.Runtime]
	if !ok {
		return errs.New(errdefs.ErrInvalidArgument, "unknown runtime %q: this agent has %s", cfg.Runtime, z.runtimeNames())
	}
	if !rt.Available {
		return errs.New(errdefs.ErrFailedPrecondition, "runtime %q cannot run on this host: %s", cfg.Runtime, rt.UnavailableReason)
	}
	return nil
}

func (z *Containerizer) runtimeNames() string {
	var names []string
	for _, rt := range z.Runtimes() {
		names = append(names, rt.Name)
	}
	return joinSorted(names)
}

func joinSorted(names []string) string {
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// NormalizeRef turns a Docker-style reference into containerd's full form.
func NormalizeRef(ref string) (string, error) { return launchspec.NormalizeRef(ref) }

func (z *Containerizer) Launch(ctx context.Context, cfg containerizer.LaunchConfig) (launched containerizer.Container, err error) {
	start := time.Now()
	defer func() { z.observeLaunch(start, launched, err) }()
	if err := z.validateLaunch(&cfg); err != nil {
		return containerizer.Container{}, err
	}
	ref, err := NormalizeRef(cfg.Image)
	if err != nil {
		return containerizer.Container{}, err
	}
	img, err := z.launchImage(ctx, ref, cfg)
	if err != nil {
		return containerizer.Container{}, err
	}
	z.touchImage(ctx, ref)
	imgSpec, err := img.Spec(ctx)
	if err != nil {
		return containerizer.Container{}, fmt.Errorf("reading the config of image %q: %w", ref, err)
	}
	args := resolveArgs(imgSpec.Config.Entrypoint, imgSpec.Config.Cmd, cfg.Entrypoint, cfg.Cmd)
	if len(args) == 0 {
		return containerizer.Container{}, errs.WithInfo(errs.New(errdefs.ErrInvalidArgument, "image %q has neither entrypoint nor cmd, and the launch gives no command", ref),
			typesv1.ErrorReasonNoCommand, "image", cfg.Image)
	}

	// Reserve the ID before touching containerd so that concurrent launches
	// of one ID cannot both proceed.
	c := &ctr{done: make(chan struct{}), info: containerizer.Container{
		ID: cfg.ID, Image: ref, ImageDigest: img.Target().Digest.String(), Runtime: cfg.Runtime,
		State: containerizer.TaskStarting, CreatedAt: time.Now().UTC(), Args: args,
		Sandbox: z.sandboxDir(cfg.ID), Labels: cfg.Labels, AutoRemove: cfg.AutoRemove, Log: cfg.Log,
		Privileged: cfg.Privileged, Resources: cfg.Resources, Stdin: cfg.Stdin, TTY: cfg.TTY,
		KillGrace: cfg.KillGrace, Pull: cfg.Pull,
		ImageHealthcheck: imageHealthcheck(ctx, img),
		Restart:          cfg.Restart,
		Network:          cfg.Network,
	}}
	z.mu.Lock()
	if _, exists := z.containers[cfg.ID]; exists {
		z.mu.Unlock()
		return containerizer.Container{}, errs.WithInfo(errs.New(errdefs.ErrAlreadyExists, "container %q already exists", cfg.ID),
			typesv1.ErrorReasonContainerExists, "container_id", string(cfg.ID))
	}
	z.containers[cfg.ID] = c
	z.mu.Unlock()
	// Checkpointed before containerd sees it: an agent that dies now finds
	// it on recovery, created or not.
	z.changed(c.snapshot(), false)

	info, err := z.launch(ctx, c, cfg, img, args)
	if err != nil && c.cont == nil && !c.snapshot().State.Terminal() {
		// Nothing exists in containerd: forget the reservation.
		z.mu.Lock()
		delete(z.containers, cfg.ID)
		z.mu.Unlock()
		if err := z.removeSandbox(cfg.ID); err != nil {
			z.log.Warn("removing the sandbox of a launch that failed", "container_id", cfg.ID, "err", err)
		}
		// Isolators may have made something in Prepare (a network
		// attachment); their Cleanup is idempotent.
		cctx, cancel := z.opCtx(ctx, 30*time.Second)
		for _, iso := range z.cfg.Isolators {
			if err := iso.Cleanup(cctx, z.isoContainer(c.snapshot())); err != nil {
				z.log.Warn("isolator cleanup of a launch that failed", "container_id", cfg.ID, "isolator", iso.Name(), "err", err)
			}
		}
		cancel()
		z.changed(c.snapshot(), true)
	}
	return info, err
}

func (z *Containerizer) launch(ctx context.Context, c *ctr, cfg containerizer.LaunchConfig, img client.Image, args []string) (containerizer.Container, error) {
	if err := makeSandbox(c.info.Sandbox); err != nil {
		return containerizer.Container{}, fmt.Errorf("creating sandbox of container %s: %w", cfg.ID, err)
	}
	if ok, err := img.IsUnpacked(ctx, z.cfg.Snapshotter); err != nil || !ok {
		if err := img.Unpack(ctx, z.cfg.Snapshotter); err != nil {
			return containerizer.Container{}, fmt.Errorf("unpacking image %q: %w", c.info.Image, err)
		}
	}
	profile := z.cfg.Runtimes[cfg.Runtime]
	var rtOpts any
	if profile.Type == runcShimType {
		rtOpts = &options.Options{BinaryName: profile.Binary, SystemdCgroup: z.cfg.SystemdCgroup}
	}
	specOpts := launchSpec(oci.WithImageConfig(img), cfg, args, c.info.Sandbox, z.cgroupPath(cfg.ID))
	isoOpts, refused, err := z.prepareIsolators(ctx, c)
	if refused {
		return containerizer.Container{}, err // the request is wrong: refused, nothing kept
	}
	if err != nil {
		return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, err)
	}
	specOpts = append(specOpts, isoOpts...)
	cont, err := z.createContainer(ctx, cfg, c.info.Image, img, profile.Type, rtOpts, specOpts)
	if err != nil {
		return containerizer.Container{}, err
	}
	if err := z.recordSpec(ctx, c, cont); err != nil {
		return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, err)
	}

	lg, err := z.loggerOf(c.info)
	if err != nil {
		return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, err)
	}
	ioc, err := lg.Prepare(ctx, z.loggerContainer(c.info))
	if err != nil {
		return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, fmt.Errorf("preparing the container's logger: %w", err))
	}
	if cfg.Stdin || cfg.TTY {
		if ioc, err = z.withStdio(ioc, c.info); err != nil {
			return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, err)
		}
	}
	task, err := cont.NewTask(ctx, ioc)
	if err != nil {
		// runc looks the command up at create: "not found" shows here.
		return z.failLaunch(ctx, c, classifyStartError(err), fmt.Errorf("creating the task: %w", err))
	}
	// Wait before Start, or an early exit can be missed. The wait lives as
	// long as the containerizer, not the request.
	exitCh, err := task.Wait(z.ctx)
	if err != nil {
		z.deleteTask(ctx, task)
		return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, fmt.Errorf("waiting on the task: %w", err))
	}
	for _, iso := range z.cfg.Isolators {
		if err := iso.Isolate(ctx, z.isoContainer(c.info), int(task.Pid())); err != nil {
			z.deleteTask(ctx, task)
			return z.failLaunch(ctx, c, containerizer.LaunchFailureNone, fmt.Errorf("isolator %s: %w", iso.Name(), err))
		}
	}
	if err := task.Start(ctx); err != nil {
		z.deleteTask(ctx, task)
		return z.failLaunch(ctx, c, classifyStartError(err), fmt.Errorf("starting the command %q: %w", args[0], err))
	}
	c.mu.Lock()
	c.task = task
	c.info.State = containerizer.TaskRunning
	c.info.Pid = task.Pid()
	c.info.StartedAt = time.Now().UTC()
	info := c.info
	c.mu.Unlock()
	z.changed(info, false)
	z.wg.Add(1)
	go z.watch(c, task, exitCh)
	return info, nil
}

// prepareIsolators asks the isolators for their spec options and records
// the container's network attachment; refused says that an isolator found
// the request wrong (InvalidArgument), so that nothing is kept.
func (z *Containerizer) prepareIsolators(ctx context.Context, c *ctr) (opts []oci.SpecOpts, refused bool, err error) {
	for _, iso := range z.cfg.Isolators {
		o, err := iso.Prepare(ctx, z.isoContainer(c.snapshot()))
		if errdefs.IsInvalidArgument(err) {
			return nil, true, err
		}
		if err != nil {
			return nil, false, fmt.Errorf("isolator %s: %w", iso.Name(), err)
		}
		opts = append(opts, o...)
	}
	z.attachment(ctx, c)
	return opts, false, nil
}

// observeLaunch counts a launch by its result and times the good ones.
func (z *Containerizer) observeLaunch(start time.Time, c containerizer.Container, err error) {
	switch {
	case err == nil:
		z.metrics.launches.WithLabelValues("ok").Inc()
		z.metrics.launchSeconds.Observe(time.Since(start).Seconds())
	case c.Reason == containerizer.ReasonContainerLaunchFailed:
		z.metrics.launches.WithLabelValues("failed").Inc()
	default:
		z.metrics.launches.WithLabelValues("refused").Inc()
	}
}

// failLaunch records a launch that failed after the container was created.
func (z *Containerizer) failLaunch(ctx context.Context, c *ctr, failure containerizer.LaunchFailure, cause error) (containerizer.Container, error) {
	dctx, dcancel := z.opCtx(ctx, 30*time.Second)
	z.detach(dctx, c.snapshot())
	dcancel()
	c.mu.Lock()
	c.info.State = containerizer.TaskFailed
	c.info.Reason = containerizer.ReasonContainerLaunchFailed
	c.info.Message = cause.Error()
	c.info.FinishedAt = time.Now().UTC()
	info := c.info
	cont := c.cont
	close(c.done)
	c.mu.Unlock()
	cctx, cancel := z.opCtx(ctx, 10*time.Second)
	defer cancel()
	if cont != nil {
		if _, err := cont.SetLabels(cctx, terminalLabels(info)); err != nil {
			z.log.Warn("recording a failed launch", "container_id", c.info.ID, "err", err)
		}
	}
	z.changed(info, false)
	err := errs.New(errdefs.ErrFailedPrecondition, "container %s failed to launch: %w", c.info.ID, cause)
	if failure != containerizer.LaunchFailureNone {
		err = &containerizer.LaunchError{Failure: failure, Err: errs.New(errdefs.ErrInvalidArgument, "container %s: %w", c.info.ID, cause)}
	}
	if info.AutoRemove {
		z.destroy(cctx, c)
	}
	return info, err
}

// classifyStartError tells "command not found" from "not executable". The
// runtime reports both only as text over the shim's ttrpc, so the text is
// all there is to go on; this is the one place that reads it.
func classifyStartError(err error) containerizer.LaunchFailure {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "executable file not found"), strings.Contains(msg, "no such file or directory"):
		return containerizer.LaunchFailureNotFound
	case strings.Contains(msg, "permission denied"), strings.Contains(msg, "exec format error"), strings.Contains(msg, "is a directory"):
		return containerizer.LaunchFailureNotExecutable
	}
	return containerizer.LaunchFailureNone
}

// startError is the error of a command that could not start in a running
// container (exec, nested, debug): a LaunchError when the runtime says the
// command is missing or not executable (so clients answer 127/126), else
// err wrapped with what.
func startError(err error, command, where, what string) error {
	if f := classifyStartError(err); f != containerizer.LaunchFailureNone {
		return &containerizer.LaunchError{Failure: f, Err: errs.New(errdefs.ErrInvalidArgument, "the command %q cannot run in %s: %w", command, where, err)}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// resolveArgs applies Docker's rules: a given entrypoint replaces the image's
// and drops the image's cmd; a given cmd replaces the image's cmd.
func resolveArgs(imgEntrypoint, imgCmd []string, entrypoint, cmd []string) []string {
	var args []string
	if entrypoint != nil {
		args = append(args, entrypoint...)
		if cmd != nil {
			args = append(args, cmd...)
		}
		return args
	}
	args = append(args, imgEntrypoint...)
	if cmd != nil {
		return append(args, cmd...)
	}
	return append(args, imgCmd...)
}

// deleteTask removes a task that will not run; errors are logged.
func (z *Containerizer) deleteTask(ctx context.Context, task client.Task) {
	cctx, cancel := z.opCtx(ctx, 30*time.Second)
	defer cancel()
	if _, err := task.Delete(cctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
		z.log.Warn("deleting a task that did not start", "container_id", task.ID(), "err", err)
	}
}

// withStdio gives a container's logger IO a terminal and a stdin FIFO: the
// shim copies the terminal's output to the logger and the FIFO to the
// terminal (or the process), and holds the FIFO open for writing itself
// until CloseIO, so attach clients may come and go.
func (z *Containerizer) withStdio(base cio.Creator, info containerizer.Container) (cio.Creator, error) {
	stdin := ""
	if info.Stdin {
		stdin = z.stdinPath(info.ID)
		if err := os.MkdirAll(filepath.Dir(stdin), 0o700); err != nil {
			return nil, err
		}
		os.Remove(stdin)
		if err := syscall.Mkfifo(stdin, 0o600); err != nil {
			return nil, fmt.Errorf("creating the stdin FIFO: %w", err)
		}
	}
	return func(id string) (cio.IO, error) {
		io, err := base(id)
		if err != nil {
			return nil, err
		}
		return &stdioIO{IO: io, stdin: stdin, tty: info.TTY}, nil
	}, nil
}

type stdioIO struct {
	cio.IO
	stdin string
	tty   bool
}

func (s *stdioIO) Config() cio.Config {
	c := s.IO.Config()
	c.Stdin, c.Terminal = s.stdin, s.tty
	return c
}

// imageHealthcheck reads the Healthcheck of a Docker image's config (OCI
// image configs have none); nil when there is none or it cannot be read.
func imageHealthcheck(ctx context.Context, img client.Image) *containerizer.ImageHealthcheck {
	desc, err := img.Config(ctx)
	if err != nil || desc.Size > 8<<20 {
		return nil
	}
	data, err := content.ReadBlob(ctx, img.ContentStore(), desc)
	if err != nil {
		return nil
	}
	var cfg struct {
		Config struct {
			Healthcheck *struct {
				Test        []string
				Interval    time.Duration
				Timeout     time.Duration
				StartPeriod time.Duration
				Retries     int
			}
		} `json:"config"`
	}
	if json.Unmarshal(data, &cfg) != nil || cfg.Config.Healthcheck == nil || len(cfg.Config.Healthcheck.Test) == 0 {
		return nil
	}
	h := cfg.Config.Healthcheck
	return &containerizer.ImageHealthcheck{Test: h.Test, Interval: h.Interval, Timeout: h.Timeout, StartPeriod: h.StartPeriod, Retries: h.Retries}
}

// createContainer creates the container in containerd with its snapshot
// and spec; on an error nothing of it is left there.
func (z *Containerizer) createContainer(ctx context.Context, cfg containerizer.LaunchConfig, image string, img client.Image, runtimeType string, rtOpts any, specOpts []oci.SpecOpts) (client.Container, error) {
	cont, err := z.client.NewContainer(ctx, string(cfg.ID),
		client.WithImage(img),
		client.WithSnapshotter(z.cfg.Snapshotter),
		client.WithNewSnapshot(string(cfg.ID), img),
		client.WithNewSpec(specOpts...),
		client.WithRuntime(runtimeType, rtOpts),
		client.WithContainerLabels(launchLabels(cfg, image)),
	)
	if errdefs.IsAlreadyExists(err) {
		return nil, errs.New(errdefs.ErrAlreadyExists, "container %q already exists in containerd namespace %s: remove it there or choose another ID", cfg.ID, z.cfg.Namespace)
	}
	if err != nil {
		// The snapshot may have been created before the spec failed.
		cctx, cancel := z.opCtx(ctx, 30*time.Second)
		z.client.SnapshotService(z.cfg.Snapshotter).Remove(cctx, string(cfg.ID))
		cancel()
		if errdefs.IsInvalidArgument(err) || errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("creating container %s: %w", cfg.ID, err)
		}
		return nil, errs.New(errdefs.ErrInvalidArgument, "creating container %s: %w", cfg.ID, err)
	}
	return cont, nil
}

// recordSpec keeps what the container's spec resolved (env, working dir,
// user) and gives the sandbox to the container's user.
func (z *Containerizer) recordSpec(ctx context.Context, c *ctr, cont client.Container) error {
	c.mu.Lock()
	c.cont = cont
	c.mu.Unlock()
	spec, err := cont.Spec(ctx)
	if err != nil || spec.Process == nil {
		return fmt.Errorf("reading the container's spec back: %w", err)
	}
	c.mu.Lock()
	c.info.Env = spec.Process.Env
	c.info.WorkingDir = spec.Process.Cwd
	c.info.User = fmt.Sprintf("%d:%d", spec.Process.User.UID, spec.Process.User.GID)
	c.mu.Unlock()
	// The sandbox is the container user's, so that a non-root container
	// writes /mnt/sandbox; its parents keep every other host user out.
	return chownSandbox(c.info.Sandbox, spec.Process.User.UID, spec.Process.User.GID)
}

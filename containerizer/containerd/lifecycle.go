package containerd

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/logger"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// watch waits for a running container's exit and records it. It returns
// without touching the container when the containerizer closes.
func (z *Containerizer) watch(c *ctr, task client.Task, ch <-chan client.ExitStatus) {
	defer z.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-z.ctx.Done():
			return
		case st := <-ch:
			if st.Error() == nil {
				z.finish(c, task, st.ExitCode(), st.ExitTime())
				return
			}
			if z.ctx.Err() != nil {
				return
			}
			// The wait broke (containerd restarted?): wait again.
			z.log.Warn("lost the wait on a container; waiting again", "container_id", c.info.ID, "err", st.Error())
			select {
			case <-z.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, 5*time.Second)
			t, err := c.cont.Task(z.ctx, nil)
			if errdefs.IsNotFound(err) {
				z.vanish(c, "its task is gone from containerd")
				return
			}
			if err != nil {
				ch = brokenWait(err)
				continue
			}
			task = t
			if ch, err = task.Wait(z.ctx); err != nil {
				ch = brokenWait(err)
			}
		}
	}
}

// brokenWait stands for a wait that could not be set up: it reports err at
// once, so that watch retries.
func brokenWait(err error) <-chan client.ExitStatus {
	ch := make(chan client.ExitStatus, 1)
	ch <- *client.NewExitStatus(client.UnknownExitStatus, time.Time{}, err)
	return ch
}

// finish records a container's exit: it deletes the task (which makes the
// shim drain and stop the logger, so the output is complete), writes the
// terminal state into the container's labels and releases waiters.
func (z *Containerizer) finish(c *ctr, task client.Task, code uint32, exitedAt time.Time) {
	ctx, cancel := z.opCtx(z.ctx, 30*time.Second)
	defer cancel()
	// Asked before the task goes, while its cgroup still exists; a limit
	// the agent acted on while it ran comes first.
	c.mu.Lock()
	limitation := c.limit
	c.mu.Unlock()
	if limitation == nil {
		limitation = z.limitation(ctx, c.snapshot())
	}
	if _, err := task.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
		z.log.Warn("deleting the task of an exited container", "container_id", c.info.ID, "err", err)
	}
	os.Remove(z.stdinPath(c.info.ID))
	// Released while the container still counts as live, so that its host
	// ports go to no one before their rules are gone.
	z.detach(ctx, c.snapshot())
	if exitedAt.IsZero() || exitedAt.Unix() <= 0 {
		exitedAt = time.Now()
	}
	c.mu.Lock()
	c.task = nil
	code32 := int32(code)
	c.info.ExitCode = &code32
	c.info.FinishedAt = exitedAt.UTC()
	c.info.Pid = 0
	c.info.State, c.info.Reason, c.info.Message = classifyExit(code, c.killed)
	if c.killed && c.killReason != containerizer.ReasonNone {
		c.info.Reason, c.info.Message = c.killReason, fmt.Sprintf("%s (exit status %d)", c.killMessage, code)
	}
	if limitation != nil && (!c.killed || c.limit != nil) {
		c.info.State, c.info.Reason, c.info.Message = containerizer.TaskFailed, containerizer.Reason(limitation.Reason), limitation.Message
	}
	info := c.info
	cont := c.cont
	c.mu.Unlock()
	info, restarting := z.restartOrEnd(c, info)
	if restarting {
		return
	}
	z.record(ctx, c, cont, info)
}

// vanish records a container whose task containerd no longer knows.
func (z *Containerizer) vanish(c *ctr, why string) {
	ctx, cancel := z.opCtx(z.ctx, 30*time.Second)
	defer cancel()
	z.detach(ctx, c.snapshot())
	c.mu.Lock()
	c.task = nil
	c.info.State = containerizer.TaskLost
	c.info.Reason = containerizer.ReasonContainerVanished
	c.info.Message = "container vanished: " + why
	c.info.FinishedAt = time.Now().UTC()
	c.info.Pid = 0
	info := c.info
	cont := c.cont
	c.mu.Unlock()
	z.record(ctx, c, cont, info)
}

// record persists a terminal state, releases waiters and auto-removes.
func (z *Containerizer) record(ctx context.Context, c *ctr, cont client.Container, info containerizer.Container) {
	if cont != nil {
		if _, err := cont.SetLabels(ctx, terminalLabels(info)); err != nil && !errdefs.IsNotFound(err) {
			z.log.Warn("recording a container's terminal state", "container_id", info.ID, "err", err)
		}
	}
	z.log.Info("container terminal", "container_id", info.ID, "state", info.State, "reason", info.Reason, "message", info.Message)
	z.changed(info, false)
	c.mu.Lock()
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.mu.Unlock()
	if info.AutoRemove {
		z.destroy(ctx, c)
	}
}

func classifyExit(code uint32, killed bool) (containerizer.TaskState, containerizer.Reason, string) {
	switch {
	case killed:
		// Mesos's rule: a task that ends after a kill request is killed,
		// however it ended.
		return containerizer.TaskKilled, containerizer.ReasonTaskKilled, fmt.Sprintf("ended after a kill request (exit status %d)", code)
	case code == 0:
		return containerizer.TaskFinished, containerizer.ReasonCommandExited, "exited with status 0"
	case code > 128 && code <= 128+64:
		sig := syscall.Signal(code - 128)
		return containerizer.TaskFailed, containerizer.ReasonCommandSignaled, fmt.Sprintf("terminated by signal %s (%s) (exit status %d)", unix.SignalName(sig), sig, code)
	default:
		return containerizer.TaskFailed, containerizer.ReasonCommandExited, fmt.Sprintf("exited with status %d", code)
	}
}

func (z *Containerizer) Wait(ctx context.Context, id containerizer.ContainerID) (containerizer.Container, error) {
	c, err := z.lookup(id)
	if err != nil {
		z.mu.Lock()
		t, ok := z.tombstones[id]
		z.mu.Unlock()
		if ok {
			return t, nil
		}
		return containerizer.Container{}, err
	}
	select {
	case <-c.done:
		return c.snapshot(), nil
	case <-ctx.Done():
		return containerizer.Container{}, ctx.Err()
	case <-z.ctx.Done():
		return containerizer.Container{}, errs.New(errdefs.ErrUnavailable, "the agent is stopping")
	}
}

func (z *Containerizer) Kill(ctx context.Context, id containerizer.ContainerID, req containerizer.KillRequest) error {
	c, err := z.lookup(id)
	if err != nil {
		return err
	}
	if z.stopRestart(ctx, c, "killed while waiting to restart") {
		return nil
	}
	c.mu.Lock()
	task, state := c.task, c.info.State
	if req.Signal == 0 {
		// No signal named: the container's kill policy.
		req.Signal = syscall.SIGKILL
		if c.info.KillGrace > 0 {
			req.Signal, req.Grace = syscall.SIGTERM, c.info.KillGrace
		}
	}
	if task == nil || state.Terminal() {
		c.mu.Unlock()
		return errs.New(errdefs.ErrFailedPrecondition, "container %q is not running (%s)", id, state)
	}
	if !c.killed && req.Reason != containerizer.ReasonNone {
		c.killReason, c.killMessage = req.Reason, req.Message
	}
	c.killed = true
	c.mu.Unlock()
	if err := task.Kill(ctx, req.Signal); err != nil {
		if errdefs.IsNotFound(err) {
			return errs.New(errdefs.ErrFailedPrecondition, "container %q is not running", id)
		}
		return fmt.Errorf("sending %s to container %s: %w", unix.SignalName(req.Signal), id, err)
	}
	if req.Grace > 0 && req.Signal != syscall.SIGKILL {
		// While the grace period runs the container is TASK_KILLING
		// (Mesos's state for it); its end makes it TASK_KILLED. Told
		// under the lock, so that the end cannot be told first.
		c.mu.Lock()
		if c.info.State == containerizer.TaskRunning {
			c.info.State = containerizer.TaskKilling
			c.info.Message = fmt.Sprintf("%s sent; SIGKILL follows in %s unless it exits", unix.SignalName(req.Signal), req.Grace)
			z.changed(c.info, false)
		}
		c.mu.Unlock()
	}
	if req.Grace > 0 && req.Signal != syscall.SIGKILL {
		z.wg.Add(1)
		go func() {
			defer z.wg.Done()
			t := time.NewTimer(req.Grace)
			defer t.Stop()
			select {
			case <-c.done:
			case <-z.ctx.Done():
			case <-t.C:
				z.log.Info("grace period over; sending SIGKILL", "container_id", id, "grace", req.Grace)
				if err := task.Kill(z.ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
					z.log.Warn("escalating to SIGKILL", "container_id", id, "err", err)
				}
			}
		}()
	}
	return nil
}

func (z *Containerizer) Destroy(ctx context.Context, id containerizer.ContainerID, force bool) error {
	c, err := z.lookup(id)
	if err != nil {
		return err
	}
	c.mu.Lock()
	running := !c.info.State.Terminal()
	c.mu.Unlock()
	if running {
		if !force {
			return errs.WithInfo(errs.New(errdefs.ErrFailedPrecondition, "container %q is running", id),
				typesv1.ErrorReasonContainerRunning, "container_id", string(id))
		}
		if err := z.Kill(ctx, id, containerizer.KillRequest{Signal: syscall.SIGKILL}); err != nil && !errdefs.IsFailedPrecondition(err) {
			return err
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(30 * time.Second):
			return errs.New(errdefs.ErrUnavailable, "container %q did not exit within 30s of SIGKILL", id)
		}
	}
	return z.destroy(ctx, c)
}

// destroy removes a terminal container from containerd, its sandbox and the
// containerizer's records. It is idempotent.
func (z *Containerizer) destroy(ctx context.Context, c *ctr) error {
	cctx, cancel := z.opCtx(ctx, 30*time.Second)
	defer cancel()
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return nil
	}
	c.removed = true
	cont, info := c.cont, c.info
	c.mu.Unlock()
	if cont != nil {
		if err := cont.Delete(cctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			c.mu.Lock()
			c.removed = false
			c.mu.Unlock()
			return fmt.Errorf("removing container %s from containerd: %w", info.ID, err)
		}
	}
	for _, iso := range z.cfg.Isolators {
		if err := iso.Cleanup(cctx, z.isoContainer(info)); err != nil {
			z.log.Warn("isolator cleanup", "container_id", info.ID, "isolator", iso.Name(), "err", err)
		}
	}
	if lg, err := z.loggerOf(info); err == nil {
		if err := lg.Cleanup(cctx, z.loggerContainer(info)); err != nil {
			z.log.Warn("logger cleanup", "container_id", info.ID, "err", err)
		}
	}
	if err := z.removeSandbox(info.ID); err != nil {
		z.log.Warn("removing sandbox", "container_id", info.ID, "err", err)
	}
	os.Remove(z.stdinPath(info.ID))
	z.changed(info, true)
	z.mu.Lock()
	delete(z.containers, info.ID)
	if info.AutoRemove {
		z.tombstones[info.ID] = info
		z.tombOrder = append(z.tombOrder, info.ID)
		if len(z.tombOrder) > maxTombstones {
			delete(z.tombstones, z.tombOrder[0])
			z.tombOrder = z.tombOrder[1:]
		}
	}
	z.mu.Unlock()
	return nil
}

func (z *Containerizer) Logs(ctx context.Context, id containerizer.ContainerID, req containerizer.LogsRequest, fn func(containerizer.LogChunk) error) error {
	c, err := z.lookup(id)
	if err != nil {
		// A nested container's output is read as a container's is.
		pc, _, n, nerr := z.nestedOf(id)
		if nerr != nil || n == nil {
			return err
		}
		lg, lc, lerr := z.nestedLogger(pc.snapshot(), n.info)
		if lerr != nil {
			return lerr
		}
		return z.readLogs(ctx, lg, lc, n.done, req, fn)
	}
	info := c.snapshot()
	lg, err := z.loggerOf(info)
	if err != nil {
		return err
	}
	return z.readLogs(ctx, lg, z.loggerContainer(info), c.done, req, fn)
}

func (z *Containerizer) readLogs(ctx context.Context, lg logger.ContainerLogger, lc logger.Container, done <-chan struct{}, req containerizer.LogsRequest, fn func(containerizer.LogChunk) error) error {
	lr := logger.ReadRequest{
		Container: lc,
		Follow:    req.Follow,
		Done:      done,
		Cursor:    req.Cursor,
		Tail:      req.Tail,
		Since:     req.Since,
	}
	for _, s := range req.Streams {
		lr.Streams = append(lr.Streams, logger.Stream(s))
	}
	return lg.Read(ctx, lr, func(ch logger.Chunk) error {
		return fn(containerizer.LogChunk{Stream: containerizer.Stream(ch.Stream), Data: ch.Data, Cursor: ch.Cursor})
	})
}

// recover rebuilds the containerizer's view from containerd and the
// agent's checkpoint: a known container is reattached (running), recorded
// (exited while the agent was away) or read back (already terminal); one
// the checkpoint knows but containerd does not is recorded as vanished;
// one containerd holds but the checkpoint does not know is destroyed, or
// kept when the config says so.
func (z *Containerizer) recover(ctx context.Context) error {
	rc := z.cfg.Recovery
	conts, err := z.client.Containers(ctx)
	if err != nil {
		return errs.New(errdefs.ErrUnavailable, "listing containers in namespace %s: %w", z.cfg.Namespace, err)
	}
	seen := map[containerizer.ContainerID]bool{}
	for _, cont := range conts {
		id := containerizer.ContainerID(cont.ID())
		seen[id] = true
		if _, known := rc.Known[id]; !known && !rc.KeepUnknown {
			z.log.Warn("destroying a container the checkpoint does not know (unknown_containers = \"keep\" keeps them)", "container_id", id)
			z.destroyUnknown(ctx, cont)
			continue
		}
		if err := z.recoverOne(ctx, cont); err != nil {
			z.log.Warn("recovering a container", "container_id", cont.ID(), "err", err)
		}
	}
	for id, known := range rc.Known {
		if seen[id] {
			continue
		}
		c := &ctr{info: known, done: make(chan struct{})}
		c.info.Pid = 0
		if !known.State.Terminal() {
			c.info.State, c.info.Reason = containerizer.TaskLost, containerizer.ReasonContainerVanished
			c.info.Message = "containerd no longer knows this container"
			if rc.Rebooted {
				c.info.State, c.info.Reason = containerizer.TaskGone, containerizer.ReasonAgentRestarted
				c.info.Message = "the host rebooted; the container did not survive"
			}
			c.info.FinishedAt = time.Now().UTC()
			z.log.Warn("container vanished", "container_id", id, "message", c.info.Message)
		}
		close(c.done)
		z.mu.Lock()
		z.containers[id] = c
		z.mu.Unlock()
		z.changed(c.info, false)
	}
	if rc.Cleanup {
		z.mu.Lock()
		var all []containerizer.ContainerID
		for id := range z.containers {
			all = append(all, id)
		}
		z.mu.Unlock()
		for _, id := range all {
			z.log.Info("--recover=cleanup: removing container", "container_id", id)
			if err := z.Destroy(ctx, id, true); err != nil {
				z.log.Warn("cleanup", "container_id", id, "err", err)
			}
		}
	}
	return nil
}

// destroyUnknown kills and removes a container the agent does not own.
func (z *Containerizer) destroyUnknown(ctx context.Context, cont client.Container) {
	if task, err := cont.Task(ctx, nil); err == nil {
		if _, err := task.Delete(ctx, client.WithProcessKill); err != nil && !errdefs.IsNotFound(err) {
			z.log.Warn("killing an unknown container", "container_id", cont.ID(), "err", err)
		}
	}
	if err := cont.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
		z.log.Warn("removing an unknown container", "container_id", cont.ID(), "err", err)
	}
	if ids.Validate(cont.ID()) == nil {
		if err := z.removeSandbox(containerizer.ContainerID(cont.ID())); err != nil {
			z.log.Warn("removing the sandbox of an unknown container", "container_id", cont.ID(), "err", err)
		}
	}
}

func (z *Containerizer) recoverOne(ctx context.Context, cont client.Container) error {
	cinfo, err := cont.Info(ctx)
	if err != nil {
		return err
	}
	c := &ctr{cont: cont, done: make(chan struct{})}
	applyLabels(&c.info, cinfo.Labels)
	if c.info.ID == "" || string(c.info.ID) != cont.ID() {
		// Not made by gearbox (kept by unknown_containers = "keep"): what the
		// checkpoint knows stands in for the labels.
		known, ok := z.cfg.Recovery.Known[containerizer.ContainerID(cont.ID())]
		if !ok {
			return fmt.Errorf("container %s has no gearbox labels: leaving it alone", cont.ID())
		}
		c.info = known
	}
	known, isKnown := z.cfg.Recovery.Known[c.info.ID]
	recoverRestartState(&c.info, known, isKnown)
	c.info.CreatedAt = cinfo.CreatedAt.UTC()
	c.info.Sandbox = z.sandboxDir(c.info.ID)
	if spec, err := cont.Spec(ctx); err == nil && spec.Process != nil {
		c.info.Args = spec.Process.Args
		c.info.Env = spec.Process.Env
		c.info.WorkingDir = spec.Process.Cwd
		c.info.User = fmt.Sprintf("%d:%d", spec.Process.User.UID, spec.Process.User.GID)
	}
	if img, err := cont.Image(ctx); err == nil {
		c.info.ImageDigest = img.Target().Digest.String()
	}
	z.mu.Lock()
	z.containers[c.info.ID] = c
	z.mu.Unlock()

	if c.info.State.Terminal() {
		close(c.done)
		z.recoverNested(ctx, c, cinfo.Labels)
		z.changed(c.info, false)
		return nil
	}
	task, err := cont.Task(ctx, nil)
	if errdefs.IsNotFound(err) {
		z.recoverTaskless(ctx, c, cont, known)
		return nil
	}
	if err != nil {
		return err
	}
	// Wait first, then look: an exit between the two is not missed.
	ch, err := task.Wait(z.ctx)
	if err != nil {
		return err
	}
	st, err := task.Status(ctx)
	if err != nil {
		return err
	}
	if st.Status == client.Created {
		z.deleteTask(ctx, task)
		if z.recoverRestart(c, known) {
			return nil // the agent stopped in the middle of a restart: again
		}
		z.recordUnlaunched(ctx, c, "the agent stopped before the container's task was started")
		return nil
	}
	if lg, err := z.loggerOf(c.info); err != nil {
		z.log.Warn("logger recovery", "container_id", c.info.ID, "err", err)
	} else if err := lg.Recover(ctx, z.loggerContainer(c.info)); err != nil {
		z.log.Warn("logger recovery", "container_id", c.info.ID, "err", err)
	}
	c.mu.Lock()
	c.task = task
	c.info.State = containerizer.TaskRunning
	if !c.info.NextRestartAt.IsZero() {
		// A restart the agent made but had not yet checkpointed.
		c.info.RestartCount++
		c.info.NextRestartAt = time.Time{}
		c.info.Reason, c.info.Message = containerizer.ReasonNone, ""
	}
	c.info.Pid = task.Pid()
	if fi, err := os.Stat(fmt.Sprintf("/proc/%d", task.Pid())); err == nil {
		c.info.StartedAt = fi.ModTime().UTC()
	}
	info := c.info
	c.mu.Unlock()
	z.recoverNested(ctx, c, cinfo.Labels)
	z.changed(info, false)
	z.wg.Add(1)
	go z.watch(c, task, ch)
	z.log.Info("recovered container", "container_id", c.info.ID, "status", st.Status)
	return nil
}

// recoverTaskless recovers a container containerd holds with no task: the
// host rebooted, a restart waits (or its exit was not yet recorded), or
// the agent stopped half-way through its launch.
func (z *Containerizer) recoverTaskless(ctx context.Context, c *ctr, cont client.Container, known containerizer.Container) {
	if z.cfg.Recovery.Rebooted {
		if z.restartAfterReboot(c) {
			return
		}
		c.mu.Lock()
		c.info.State, c.info.Reason = containerizer.TaskGone, containerizer.ReasonAgentRestarted
		c.info.Message = "the host rebooted; the container did not survive"
		c.info.FinishedAt = time.Now().UTC()
		info := c.info
		c.mu.Unlock()
		z.record(ctx, c, cont, info)
		return
	}
	if z.recoverRestart(c, known) || z.recoverLostExit(ctx, c, known) {
		return
	}
	z.recordUnlaunched(ctx, c, "the agent stopped before the container's task was created")
}

// recordUnlaunched records a container found half-launched at recovery.
func (z *Containerizer) recordUnlaunched(ctx context.Context, c *ctr, why string) {
	c.mu.Lock()
	c.info.State = containerizer.TaskFailed
	c.info.Reason = containerizer.ReasonContainerLaunchFailed
	c.info.Message = why
	c.info.FinishedAt = time.Now().UTC()
	info, cont := c.info, c.cont
	c.mu.Unlock()
	z.record(ctx, c, cont, info)
}

package containerd

// Restart policies, the containerizer's side (the rules are in
// containerizer/restart):
//
//	exit ──► finish (task deleted, the end classified) ──► restartOrEnd
//	     ├─ the policy says no ──► record: terminal, as without a policy
//	     └─ it says yes ──► TASK_STARTING, LastExit, NextRestartAt, checkpointed
//	                    ──► restartAfter (a timer, one goroutine, z.wg)
//	                    ──► restart: a new task of the same container (same
//	                        ID, spec, snapshot and sandbox; the logger starts
//	                        again with it, appending; isolators re-applied)
//	                    ──► TASK_RUNNING, RestartCount+1, watched again
//
// The timer's owner is the containerizer: Close ends it (the pending restart
// stays checkpointed and a new agent arms it again at NextRestartAt); Kill
// and Destroy end it and make the container terminal (TASK_KILLED).

import (
	"context"
	"fmt"
	"time"

	"github.com/containerd/containerd/v2/client"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/containerizer/restart"
)

// restartOrEnd is how finish ends: when the container's policy restarts
// the process that ended (info says how), the container waits for its
// back-off and restartOrEnd returns true; otherwise it returns info,
// perhaps with a word on why no restart follows, to be recorded terminal.
func (z *Containerizer) restartOrEnd(c *ctr, info containerizer.Container) (containerizer.Container, bool) {
	if !restart.Enabled(info.Restart) {
		return info, false
	}
	exit := containerizer.ProcessExit{ExitCode: info.ExitCode, State: info.State, Reason: info.Reason, Message: info.Message, Time: info.FinishedAt}
	ran := info.FinishedAt.Sub(info.StartedAt)
	if info.StartedAt.IsZero() {
		ran = 0
	}
	again, delay := restart.Decide(info.Restart, exit, ran, info.RestartCount, info.RestartDelay)
	if !again {
		if p := info.Restart; p.MaxRetries > 0 && info.RestartCount >= p.MaxRetries && exit.State != containerizer.TaskFinished && !restart.KilledByUser(exit) {
			info.Message += fmt.Sprintf("; not restarted: %s gave up after %s", restart.String(p), plural(info.RestartCount, "restart"))
			c.mu.Lock()
			c.info.Message = info.Message
			c.mu.Unlock()
		}
		return info, false
	}
	at := time.Now().Add(delay)
	c.mu.Lock()
	if c.removed {
		c.mu.Unlock()
		return info, false
	}
	c.info.LastExit = &exit
	c.info.State = containerizer.TaskStarting
	c.info.Message = fmt.Sprintf("%s; restarting (%s)", exit.Message, restart.Count(info.Restart, info.RestartCount+1))
	c.info.ExitCode = nil
	c.info.FinishedAt = time.Time{}
	c.info.NextRestartAt = at.UTC()
	c.info.RestartDelay = delay
	stop := make(chan struct{})
	c.restartStop = stop
	info = c.info
	c.mu.Unlock()
	z.log.Info("container exited; restarting it after its back-off", "container_id", info.ID, "exit", exit.Message,
		"restart_count", info.RestartCount, "delay", delay)
	z.changed(info, false)
	z.metrics.restarts.WithLabelValues("scheduled").Inc()
	z.wg.Add(1)
	go z.restartAfter(c, stop, at)
	return info, true
}

// restartAfter waits until at, then restarts the container, unless stop
// (a kill, a removal) or the containerizer's end comes first.
func (z *Containerizer) restartAfter(c *ctr, stop <-chan struct{}, at time.Time) {
	defer z.wg.Done()
	t := time.NewTimer(max(time.Until(at), 0))
	defer t.Stop()
	select {
	case <-z.ctx.Done():
		return // detached: the restart stays checkpointed for the next agent
	case <-stop:
		return
	case <-t.C:
	}
	z.restart(c, stop)
}

// restart starts a new process of the container: a new task of the same
// containerd container, with its logger and isolators, as launch does.
func (z *Containerizer) restart(c *ctr, stop <-chan struct{}) {
	ctx, cancel := z.opCtx(z.ctx, 2*time.Minute)
	defer cancel()
	c.mu.Lock()
	info, cont := c.info, c.cont
	c.mu.Unlock()
	task, exitCh, err := z.newTask(ctx, cont, info)
	c.mu.Lock()
	select {
	case <-stop:
		// Killed or removed meanwhile: that already made it terminal.
		c.mu.Unlock()
		if task != nil {
			z.deleteTask(ctx, task)
		}
		return
	default:
	}
	if err != nil && z.ctx.Err() != nil {
		// The agent is stopping: the restart stays pending in the
		// checkpoint, and the next agent makes it (a task left created is
		// deleted by its recovery).
		c.mu.Unlock()
		return
	}
	c.restartStop = nil
	if err != nil {
		c.mu.Unlock()
		z.metrics.restarts.WithLabelValues("failed").Inc()
		z.failLaunch(ctx, c, containerizer.LaunchFailureNone, fmt.Errorf("restarting it (%s): %w", restart.Count(info.Restart, info.RestartCount+1), err))
		return
	}
	c.task = task
	c.killed, c.limit = false, nil
	c.info.State = containerizer.TaskRunning
	c.info.Reason, c.info.Message = containerizer.ReasonNone, ""
	c.info.Pid = task.Pid()
	c.info.StartedAt = time.Now().UTC()
	c.info.RestartCount++
	c.info.NextRestartAt = time.Time{}
	info = c.info
	c.mu.Unlock()
	z.metrics.restarts.WithLabelValues("ok").Inc()
	z.log.Info("container restarted", "container_id", info.ID, "restart_count", info.RestartCount, "pid", info.Pid)
	z.changed(info, false)
	z.wg.Add(1)
	go z.watch(c, task, exitCh)
}

// newTask creates and starts a task of an existing container, as launch's
// second half does: logger IO, wait before start, isolators.
func (z *Containerizer) newTask(ctx context.Context, cont client.Container, info containerizer.Container) (client.Task, <-chan client.ExitStatus, error) {
	if cont == nil {
		return nil, nil, fmt.Errorf("container %s is not in containerd", info.ID)
	}
	lg, err := z.loggerOf(info)
	if err != nil {
		return nil, nil, err
	}
	ioc, err := lg.Prepare(ctx, z.loggerContainer(info))
	if err != nil {
		return nil, nil, fmt.Errorf("preparing the container's logger: %w", err)
	}
	if info.Stdin || info.TTY {
		if ioc, err = z.withStdio(ioc, info); err != nil {
			return nil, nil, err
		}
	}
	task, err := cont.NewTask(ctx, ioc)
	if err != nil {
		return nil, nil, fmt.Errorf("creating the task: %w", err)
	}
	exitCh, err := task.Wait(z.ctx)
	if err != nil {
		z.deleteTask(ctx, task)
		return nil, nil, fmt.Errorf("waiting on the task: %w", err)
	}
	// The spec holds the resources of the launch; an update since then is
	// applied again to the new cgroup.
	res := info.Resources
	res.Devices = nil
	for _, iso := range z.cfg.Isolators {
		ic := z.isoContainer(info)
		if err := iso.Update(ctx, ic, res); err != nil {
			z.deleteTask(ctx, task)
			return nil, nil, fmt.Errorf("isolator %s: %w", iso.Name(), err)
		}
		if err := iso.Isolate(ctx, ic, int(task.Pid())); err != nil {
			z.deleteTask(ctx, task)
			return nil, nil, fmt.Errorf("isolator %s: %w", iso.Name(), err)
		}
	}
	if err := task.Start(ctx); err != nil {
		z.deleteTask(ctx, task)
		return nil, nil, fmt.Errorf("starting the command: %w", err)
	}
	return task, exitCh, nil
}

// stopRestart ends a restart that waits for its back-off (or is under
// way): the container becomes terminal, TASK_KILLED, with its last exit.
// It returns false when no restart was pending.
func (z *Containerizer) stopRestart(ctx context.Context, c *ctr, why string) bool {
	c.mu.Lock()
	if c.restartStop == nil {
		c.mu.Unlock()
		return false
	}
	close(c.restartStop)
	c.restartStop = nil
	c.info.State, c.info.Reason = containerizer.TaskKilled, containerizer.ReasonTaskKilled
	c.info.Message = why
	if e := c.info.LastExit; e != nil {
		c.info.Message += "; its last process " + e.Message
		c.info.ExitCode = e.ExitCode
	}
	c.info.NextRestartAt = time.Time{}
	c.info.FinishedAt = time.Now().UTC()
	info, cont := c.info, c.cont
	c.mu.Unlock()
	cctx, cancel := z.opCtx(ctx, 30*time.Second)
	defer cancel()
	z.record(cctx, c, cont, info)
	return true
}

// recoverRestart arms again a restart a previous agent left waiting (the
// checkpoint says when); it returns false when known holds none.
func (z *Containerizer) recoverRestart(c *ctr, known containerizer.Container) bool {
	if known.NextRestartAt.IsZero() || known.State != containerizer.TaskStarting {
		return false
	}
	stop := make(chan struct{})
	c.mu.Lock()
	c.info.State, c.info.Reason, c.info.Message = known.State, known.Reason, known.Message
	c.info.ExitCode, c.info.FinishedAt = nil, time.Time{}
	c.restartStop = stop
	info := c.info
	c.mu.Unlock()
	z.changed(info, false)
	z.log.Info("recovered a container waiting to restart", "container_id", info.ID, "restart_count", info.RestartCount, "at", info.NextRestartAt)
	z.wg.Add(1)
	go z.restartAfter(c, stop, info.NextRestartAt)
	return true
}

// recoverRestartState takes what the checkpoint knows of a container's
// restarts: containerd's labels do not hold it.
func recoverRestartState(info *containerizer.Container, known containerizer.Container, ok bool) {
	if !ok {
		return
	}
	info.Restart, info.RestartCount, info.LastExit = known.Restart, known.RestartCount, known.LastExit
	info.NextRestartAt, info.RestartDelay = known.NextRestartAt, known.RestartDelay
	if info.StartedAt.IsZero() {
		info.StartedAt = known.StartedAt
	}
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// recoverLostExit handles a container with a restart policy whose process
// ended and whose task finish deleted, but whose end the agent did not
// record before it stopped (the checkpoint says running, containerd has no
// task): the exit status is lost, and the end counts as a failure.
func (z *Containerizer) recoverLostExit(ctx context.Context, c *ctr, known containerizer.Container) bool {
	if known.State != containerizer.TaskRunning || !restart.Enabled(known.Restart) {
		return false
	}
	c.mu.Lock()
	c.info.State, c.info.Reason = containerizer.TaskFailed, containerizer.ReasonContainerVanished
	c.info.Message = "its process ended while the agent was stopping, which lost its exit status"
	c.info.FinishedAt = time.Now().UTC()
	c.info.Pid = 0
	info, cont := c.info, c.cont
	c.mu.Unlock()
	if info, restarting := z.restartOrEnd(c, info); !restarting {
		z.record(ctx, c, cont, info)
	}
	return true
}

// restartAfterReboot starts again, after its back-off, a container the
// host's reboot ended when its restart policy restarts it: Docker's rule
// when its daemon starts. The reboot counts as a failure (on-failure
// restarts it too, within its count). It returns false when the policy
// says no; the container is then gone, as without a policy.
func (z *Containerizer) restartAfterReboot(c *ctr) bool {
	c.mu.Lock()
	if !restart.Enabled(c.info.Restart) {
		c.mu.Unlock()
		return false
	}
	c.info.State, c.info.Reason = containerizer.TaskFailed, containerizer.ReasonAgentRestarted
	c.info.Message = "the host rebooted"
	c.info.FinishedAt = time.Now().UTC()
	c.info.ExitCode, c.info.Pid, c.info.NextRestartAt = nil, 0, time.Time{}
	info := c.info
	c.mu.Unlock()
	_, again := z.restartOrEnd(c, info)
	return again
}

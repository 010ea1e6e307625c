package containerd

import (
	"context"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// resolveLog applies the agent's logging defaults and bounds to a launch.
func (z *Containerizer) resolveLog(lc *containerizer.LogConfig) error {
	d := z.cfg.LogDefaults
	if lc.Driver == "" {
		lc.Driver = d.Driver
	}
	if _, ok := z.cfg.Loggers[lc.Driver]; !ok {
		return errs.New(errdefs.ErrPermissionDenied, "logger %q is not configured on this agent: it has %s", lc.Driver, z.loggerNames())
	}
	if lc.MaxSize == 0 {
		lc.MaxSize = d.MaxSize
	}
	if lc.MaxFiles == 0 {
		lc.MaxFiles = d.MaxFiles
	}
	if lc.Mode == "" {
		lc.Mode = d.Mode
	}
	lim := z.cfg.LogLimits
	switch {
	case lc.MaxSize < 0 || (lim.MaxSize > 0 && lc.MaxSize > lim.MaxSize):
		return errs.New(errdefs.ErrInvalidArgument, "log max-size %d is outside what this agent allows (1 byte to %d)", lc.MaxSize, lim.MaxSize)
	case lc.MaxSize > 0 && lc.MaxSize < minLogSize:
		return errs.New(errdefs.ErrInvalidArgument, "log max-size %d is below the minimum of %d bytes", lc.MaxSize, minLogSize)
	case lc.MaxFiles < 0 || (lim.MaxFiles > 0 && lc.MaxFiles > lim.MaxFiles):
		return errs.New(errdefs.ErrInvalidArgument, "log max-files %d is outside what this agent allows (1 to %d)", lc.MaxFiles, lim.MaxFiles)
	case lc.Mode != "" && lc.Mode != shimlog.ModeBlock && lc.Mode != shimlog.ModeDrop:
		return errs.New(errdefs.ErrInvalidArgument, "log mode %q: use block or drop", lc.Mode)
	}
	return nil
}

// minLogSize keeps rotation from spinning on tiny files.
const minLogSize = 1024

func (z *Containerizer) loggerNames() string {
	var names []string
	for n := range z.cfg.Loggers {
		names = append(names, n)
	}
	return joinSorted(names)
}

// watchRunning asks, every second, each running container's logger whether
// it still does its job and its isolators whether a limit was passed (a
// limitation ends the container, as in Mesos).
func (z *Containerizer) watchRunning() {
	defer z.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-z.ctx.Done():
			return
		case <-t.C:
		}
		z.mu.Lock()
		cs := make([]*ctr, 0, len(z.containers))
		for _, c := range z.containers {
			cs = append(cs, c)
		}
		z.mu.Unlock()
		for _, c := range cs {
			z.checkLogger(c)
			z.checkLimits(c)
		}
	}
}

func (z *Containerizer) checkLogger(c *ctr) {
	c.mu.Lock()
	info, task := c.info, c.task
	c.mu.Unlock()
	if task == nil || !info.State.Running() {
		return
	}
	l, err := z.loggerOf(info)
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(z.ctx, 5*time.Second)
	defer cancel()
	msg := ""
	if err := l.Check(ctx, z.loggerContainer(info)); err != nil {
		// A logger ends with its container: only a running task's counts.
		if st, serr := task.Status(ctx); serr != nil || st.Status != client.Running {
			return
		}
		msg = err.Error()
	}
	c.mu.Lock()
	prev := c.info.LoggingDegraded
	c.info.LoggingDegraded = msg
	c.mu.Unlock()
	switch {
	case msg != "" && prev == "":
		z.metrics.loggerFailures.Inc()
		z.log.Warn("container logging degraded", "container_id", info.ID, "err", msg)
	case msg == "" && prev != "":
		z.log.Info("container logging recovered", "container_id", info.ID)
	}
}

// checkLimits ends a running container that passed a limit.
func (z *Containerizer) checkLimits(c *ctr) {
	c.mu.Lock()
	info, task, already := c.info, c.task, c.limit != nil
	c.mu.Unlock()
	if task == nil || !info.State.Running() || already || len(z.cfg.Isolators) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(z.ctx, 5*time.Second)
	defer cancel()
	l := z.limitation(ctx, info)
	if l == nil {
		return
	}
	c.mu.Lock()
	c.limit, c.killed = l, true
	c.mu.Unlock()
	z.log.Warn("container passed a limit; killing it", "container_id", info.ID, "reason", l.Reason, "message", l.Message)
	if err := task.Kill(ctx, syscall.SIGKILL); err != nil && !errdefs.IsNotFound(err) {
		z.log.Warn("killing a limited container", "container_id", info.ID, "err", err)
	}
}

// recoverIsolators tells the isolators which containers survived.
func (z *Containerizer) recoverIsolators(ctx context.Context) {
	var running []isolators.Container
	z.mu.Lock()
	for _, c := range z.containers {
		if info := c.snapshot(); info.State.Running() {
			running = append(running, z.isoContainer(info))
		}
	}
	z.mu.Unlock()
	for _, iso := range z.cfg.Isolators {
		if err := iso.Recover(ctx, running); err != nil {
			z.log.Warn("isolator recovery", "isolator", iso.Name(), "err", err)
		}
	}
	z.mu.Lock()
	var all []*ctr
	for _, c := range z.containers {
		all = append(all, c)
	}
	z.mu.Unlock()
	for _, c := range all {
		z.attachment(ctx, c)
	}
}

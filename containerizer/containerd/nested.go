package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/logger"
)

// Nested containers (class DEBUG, as Mesos's) are execs in their parent's
// task: they share its namespaces and cgroup and die with it. Each one's
// record is a label on the parent in containerd (gearbox.nested/CHILD, the
// NestedContainer as JSON), so a restarted agent finds them again; their
// output goes through the parent's logger into the parent's sandbox under
// containers/CHILD/.
const labelNestedPrefix = "gearbox.nested/"

// nested is the containerizer's record of one nested container.
type nested struct {
	info    containerizer.NestedContainer
	proc    client.Process // nil once deleted
	killed  bool
	done    chan struct{} // closed when terminal and output complete
	removed bool
}

func nestedExecID(child string) string { return "nested-" + child }

// nestedOf finds the parent of a nested ID and the child's record (nil if
// there is none yet).
func (z *Containerizer) nestedOf(id containerizer.ContainerID) (*ctr, string, *nested, error) {
	parent, child, err := ids.SplitNested(string(id))
	if err != nil {
		return nil, "", nil, errs.New(errdefs.ErrInvalidArgument, "%w", err)
	}
	c, err := z.lookup(containerizer.ContainerID(parent))
	if err != nil {
		return nil, "", nil, err
	}
	c.mu.Lock()
	n := c.nested[child]
	c.mu.Unlock()
	return c, child, n, nil
}

func (z *Containerizer) nestedLogger(parent containerizer.Container, n containerizer.NestedContainer) (logger.ContainerLogger, logger.Container, error) {
	lg, err := z.loggerOf(parent)
	if err != nil {
		return nil, logger.Container{}, err
	}
	lc := z.loggerContainer(parent)
	lc.ID, lc.Sandbox = string(n.ID), n.Sandbox
	return lg, lc, nil
}

func (z *Containerizer) LaunchNested(ctx context.Context, cfg containerizer.NestedConfig) (containerizer.NestedContainer, error) {
	c, child, _, err := z.nestedOf(cfg.ID)
	if err != nil {
		return containerizer.NestedContainer{}, err
	}
	if len(cfg.Args) == 0 {
		return containerizer.NestedContainer{}, errs.New(errdefs.ErrInvalidArgument, "nested container %s: no command given", cfg.ID)
	}
	for _, e := range cfg.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return containerizer.NestedContainer{}, errs.New(errdefs.ErrInvalidArgument, "env entry %q is malformed: write KEY=VALUE", e)
		}
	}
	c.mu.Lock()
	parent, task, cont := c.info, c.task, c.cont
	if task == nil || !parent.State.Running() {
		c.mu.Unlock()
		return containerizer.NestedContainer{}, errs.New(errdefs.ErrFailedPrecondition, "container %q is not running (%s): a nested container needs a running parent", parent.ID, parent.State)
	}
	if _, exists := c.nested[child]; exists {
		c.mu.Unlock()
		return containerizer.NestedContainer{}, errs.New(errdefs.ErrAlreadyExists, "nested container %q already exists: choose another name or remove it", cfg.ID)
	}
	n := &nested{done: make(chan struct{}), info: containerizer.NestedContainer{
		ID: cfg.ID, Args: cfg.Args, State: containerizer.TaskStarting,
		Sandbox: filepath.Join(parent.Sandbox, "containers", child),
	}}
	if c.nested == nil {
		c.nested = map[string]*nested{}
	}
	c.nested[child] = n
	c.mu.Unlock()
	info, err := z.launchNested(ctx, c, cont, task, child, n, cfg)
	if err != nil {
		c.mu.Lock()
		delete(c.nested, child)
		c.mu.Unlock()
		if lg, lc, lerr := z.nestedLogger(parent, n.info); lerr == nil {
			cctx, cancel := z.opCtx(ctx, 10*time.Second)
			lg.Cleanup(cctx, lc)
			cancel()
		}
		if rerr := removeNestedDir(parent.Sandbox, child); rerr != nil {
			z.log.Warn("removing a nested container's directory", "container_id", cfg.ID, "err", rerr)
		}
	}
	return info, err
}

func (z *Containerizer) launchNested(ctx context.Context, c *ctr, cont client.Container, task client.Task, child string, n *nested, cfg containerizer.NestedConfig) (containerizer.NestedContainer, error) {
	p, err := execSpec(ctx, cont, containerizer.ExecConfig{Args: cfg.Args, Env: cfg.Env, User: cfg.User, WorkingDir: cfg.WorkingDir})
	if err != nil {
		return containerizer.NestedContainer{}, err
	}
	if err := makeNestedDir(c.snapshot().Sandbox, child); err != nil {
		return containerizer.NestedContainer{}, fmt.Errorf("nested container %s: %w", cfg.ID, err)
	}
	lg, lc, err := z.nestedLogger(c.snapshot(), n.info)
	if err != nil {
		return containerizer.NestedContainer{}, err
	}
	ioc, err := lg.Prepare(ctx, lc)
	if err != nil {
		return containerizer.NestedContainer{}, fmt.Errorf("preparing the logger of %s: %w", cfg.ID, err)
	}
	release, err := z.execSlot(ctx)
	if err != nil {
		return containerizer.NestedContainer{}, err
	}
	defer release()
	// Setting up runs to its end whatever the caller does meanwhile.
	ctx, cancel := z.opCtx(ctx, 30*time.Second)
	defer cancel()
	proc, err := task.Exec(ctx, nestedExecID(child), p, ioc)
	if err != nil {
		return containerizer.NestedContainer{}, fmt.Errorf("creating nested container %s: %w", cfg.ID, err)
	}
	exitCh, err := proc.Wait(z.ctx)
	if err == nil {
		err = proc.Start(ctx)
	}
	if err != nil {
		proc.Delete(ctx, client.WithProcessKill)
		return containerizer.NestedContainer{}, startError(err, cfg.Args[0], "container "+string(c.info.ID), "starting nested container "+string(cfg.ID))
	}
	c.mu.Lock()
	n.proc = proc
	n.info.State = containerizer.TaskRunning
	n.info.Pid = proc.Pid()
	n.info.StartedAt = time.Now().UTC()
	info := n.info
	c.mu.Unlock()
	z.recordNested(ctx, cont, child, &info)
	z.wg.Add(1)
	go z.watchNested(c, cont, child, n, exitCh)
	return info, nil
}

// recordNested writes a nested container's record on its parent; nil
// removes it.
func (z *Containerizer) recordNested(ctx context.Context, cont client.Container, child string, info *containerizer.NestedContainer) {
	v := ""
	if info != nil {
		b, _ := json.Marshal(info)
		v = clip(string(b), maxLabelValue)
	}
	if _, err := cont.SetLabels(ctx, map[string]string{labelNestedPrefix + child: v}); err != nil && !errdefs.IsNotFound(err) {
		z.log.Warn("recording a nested container", "container_id", cont.ID(), "child", child, "err", err)
	}
}

// watchNested waits for a nested container's exit, deletes its exec (the
// shim then drains its logger) and records it.
func (z *Containerizer) watchNested(c *ctr, cont client.Container, child string, n *nested, ch <-chan client.ExitStatus) {
	defer z.wg.Done()
	var st client.ExitStatus
	select {
	case <-z.ctx.Done():
		return
	case st = <-ch:
	}
	if z.ctx.Err() != nil {
		return
	}
	ctx, cancel := z.opCtx(z.ctx, 30*time.Second)
	defer cancel()
	c.mu.Lock()
	proc := n.proc
	c.mu.Unlock()
	if proc != nil {
		if _, err := proc.Delete(ctx); err != nil && !errdefs.IsNotFound(err) {
			z.log.Warn("deleting a nested container's exec", "container_id", n.info.ID, "err", err)
		}
	}
	c.mu.Lock()
	n.proc = nil
	n.info.Pid = 0
	n.info.FinishedAt = time.Now().UTC()
	if st.Error() != nil {
		n.info.State, n.info.Reason = containerizer.TaskLost, containerizer.ReasonContainerVanished
		n.info.Message = "lost the wait: " + st.Error().Error()
	} else {
		code := int32(st.ExitCode())
		n.info.ExitCode = &code
		n.info.FinishedAt = st.ExitTime().UTC()
		n.info.State, n.info.Reason, n.info.Message = classifyExit(st.ExitCode(), n.killed)
	}
	info, removed := n.info, n.removed
	close(n.done)
	c.mu.Unlock()
	if !removed {
		z.recordNested(ctx, cont, child, &info)
	}
	z.log.Info("nested container terminal", "container_id", info.ID, "state", info.State)
}

func (z *Containerizer) WaitNested(ctx context.Context, id containerizer.ContainerID) (containerizer.NestedContainer, error) {
	c, _, n, err := z.nestedOf(id)
	if err != nil {
		return containerizer.NestedContainer{}, err
	}
	if n == nil {
		return containerizer.NestedContainer{}, errs.New(errdefs.ErrNotFound, "nested container %q not found", id)
	}
	select {
	case <-n.done:
	case <-ctx.Done():
		return containerizer.NestedContainer{}, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return n.info, nil
}

func (z *Containerizer) KillNested(ctx context.Context, id containerizer.ContainerID, sig syscall.Signal) error {
	c, _, n, err := z.nestedOf(id)
	if err != nil {
		return err
	}
	if n == nil {
		return errs.New(errdefs.ErrNotFound, "nested container %q not found", id)
	}
	c.mu.Lock()
	proc, state := n.proc, n.info.State
	if proc != nil {
		n.killed = true
	}
	c.mu.Unlock()
	if proc == nil || state.Terminal() {
		return errs.New(errdefs.ErrFailedPrecondition, "nested container %q is not running (%s)", id, state)
	}
	if err := proc.Kill(ctx, sig); err != nil && !errdefs.IsNotFound(err) {
		return fmt.Errorf("signalling nested container %s: %w", id, err)
	}
	return nil
}

func (z *Containerizer) RemoveNested(ctx context.Context, id containerizer.ContainerID, force bool) error {
	c, child, n, err := z.nestedOf(id)
	if err != nil {
		return err
	}
	if n == nil {
		return errs.New(errdefs.ErrNotFound, "nested container %q not found", id)
	}
	select {
	case <-n.done:
	default:
		if !force {
			return errs.New(errdefs.ErrFailedPrecondition, "nested container %q is running: kill it first or remove it with force", id)
		}
		if err := z.KillNested(ctx, id, syscall.SIGKILL); err != nil && !errdefs.IsFailedPrecondition(err) {
			return err
		}
		select {
		case <-n.done:
		case <-time.After(10 * time.Second):
			return errs.New(errdefs.ErrUnavailable, "nested container %q did not exit within 10 s of SIGKILL", id)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.mu.Lock()
	n.removed = true
	delete(c.nested, child)
	parent, cont := c.info, c.cont
	c.mu.Unlock()
	cctx, cancel := z.opCtx(ctx, 10*time.Second)
	defer cancel()
	if cont != nil {
		z.recordNested(cctx, cont, child, nil)
	}
	if lg, lc, err := z.nestedLogger(parent, n.info); err == nil {
		lg.Cleanup(cctx, lc)
	}
	// The record is gone; what is left in the parent's sandbox goes with
	// it. A removal refused (the parent put a link or a mount where the
	// child's directory was) is the parent's doing: logged, not retried.
	if err := removeNestedDir(parent.Sandbox, child); err != nil {
		z.log.Warn("removing a nested container's directory", "container_id", id, "err", err)
	}
	return nil
}

// recoverNested finds the nested containers of a recovered parent from its
// labels and waits on those that still run. A parent that is not running
// has none running either.
func (z *Containerizer) recoverNested(ctx context.Context, c *ctr, labels map[string]string) {
	for k, v := range labels {
		child, ok := strings.CutPrefix(k, labelNestedPrefix)
		if !ok {
			continue
		}
		n := &nested{done: make(chan struct{})}
		if err := json.Unmarshal([]byte(v), &n.info); err != nil {
			z.log.Warn("unreadable nested container record", "container_id", c.info.ID, "child", child, "err", err)
			continue
		}
		c.mu.Lock()
		if c.nested == nil {
			c.nested = map[string]*nested{}
		}
		c.nested[child] = n
		task, cont := c.task, c.cont
		c.mu.Unlock()
		if n.info.State.Terminal() {
			close(n.done)
			continue
		}
		var why error
		if task == nil {
			why = errors.New("its parent is no longer running")
		} else if proc, err := task.LoadProcess(ctx, nestedExecID(child), nil); err != nil {
			why = err
		} else if ch, err := proc.Wait(z.ctx); err != nil {
			why = err
		} else {
			n.proc = proc
			z.wg.Add(1)
			go z.watchNested(c, cont, child, n, ch)
			continue
		}
		n.info.State, n.info.Reason = containerizer.TaskLost, containerizer.ReasonContainerVanished
		n.info.Message = "nested container vanished while the agent was down: " + why.Error()
		n.info.FinishedAt = time.Now().UTC()
		n.info.Pid = 0
		close(n.done)
		z.recordNested(ctx, cont, child, &n.info)
	}
}

// stdinPath is the FIFO behind the stdin of a container launched with
// stdin open. The shim reads it and holds it open for writing itself, so
// that writers may come and go (AttachInput, agent restarts).
func (z *Containerizer) stdinPath(id containerizer.ContainerID) string {
	return filepath.Join(z.cfg.RunDir, "stdin", z.cfg.Namespace+"."+string(id))
}

func (z *Containerizer) AttachInput(ctx context.Context, id containerizer.ContainerID) (containerizer.Attachment, error) {
	c, err := z.lookup(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.info.Stdin {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "container %q was launched without stdin open: nothing can be attached to its input (launch it with -i -t)", id)
	}
	if c.task == nil || !c.info.State.Running() {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "container %q is not running (%s)", id, c.info.State)
	}
	if c.attached {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "another client is attached to the input of container %q: one writer at a time (it detaches with its detach keys)", id)
	}
	f, err := os.OpenFile(z.stdinPath(id), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, syscall.ENXIO) || errors.Is(err, os.ErrNotExist) {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "the stdin of container %q is closed", id)
	}
	if err != nil {
		return nil, fmt.Errorf("opening the stdin of container %s: %w", id, err)
	}
	c.attached = true
	return &attachment{File: f, task: c.task, release: func() {
		c.mu.Lock()
		c.attached = false
		c.mu.Unlock()
	}}, nil
}

type attachment struct {
	*os.File
	task    client.Task
	release func()
}

func (a *attachment) Resize(ctx context.Context, w, h uint32) error {
	return a.task.Resize(ctx, w, h)
}

func (a *attachment) CloseStdin(ctx context.Context) error {
	a.File.Close()
	return a.task.CloseIO(ctx, client.WithStdinCloser)
}

func (a *attachment) Close() error {
	err := a.File.Close()
	if a.release != nil {
		a.release()
		a.release = nil
	}
	if errors.Is(err, os.ErrClosed) {
		return nil
	}
	return err
}

package containerd

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
)

// Exec runs a command in a running container: a copy of the container's
// process spec with the session's command, through the task's Exec, with
// FIFOs under the agent's run dir.
func (z *Containerizer) Exec(ctx context.Context, id containerizer.ContainerID, cfg containerizer.ExecConfig, eio containerizer.ExecIO) (containerizer.Exec, error) {
	c, err := z.lookup(id)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	info, task, cont := c.info, c.task, c.cont
	c.mu.Unlock()
	if task == nil || !info.State.Running() {
		return nil, errs.New(errdefs.ErrFailedPrecondition, "container %q is not running (%s): a session needs a running container", id, info.State)
	}
	if len(cfg.Args) == 0 && cfg.Image == "" {
		return nil, errs.New(errdefs.ErrInvalidArgument, "no command given")
	}
	if cfg.Image != "" {
		return z.debug(ctx, info, task, cfg, eio)
	}
	p, err := execSpec(ctx, cont, cfg)
	if err != nil {
		return nil, err
	}
	e := &execProc{z: z}
	creator, err := z.sessionIO(cfg, eio, e)
	if err != nil {
		return nil, err
	}
	release, err := z.execSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	execID := "session-" + ids.New()
	// Setting up runs to its end whatever the caller does meanwhile: a
	// start cancelled halfway leaves a process that Close cannot kill.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	proc, err := task.Exec(ctx, execID, p, creator)
	if err != nil {
		return nil, fmt.Errorf("creating the session in container %s: %w", id, err)
	}
	e.proc = proc
	if e.exit, err = proc.Wait(context.WithoutCancel(ctx)); err != nil {
		e.Close()
		return nil, err
	}
	if err := proc.Start(ctx); err != nil {
		e.Close()
		return nil, startError(err, cfg.Args[0], "container "+string(id), "starting the session in container "+string(id))
	}
	if cfg.TTY && cfg.Width > 0 && cfg.Height > 0 {
		proc.Resize(ctx, cfg.Width, cfg.Height)
	}
	return e, nil
}

// sessionIO connects a session's process to its caller through FIFOs under
// the agent's run dir.
func (z *Containerizer) sessionIO(cfg containerizer.ExecConfig, eio containerizer.ExecIO, e *execProc) (cio.Creator, error) {
	fifoDir := filepath.Join(z.cfg.RunDir, "fifo")
	if err := os.MkdirAll(fifoDir, 0o700); err != nil {
		return nil, err
	}
	stdin := eio.Stdin
	if stdin != nil && !cfg.TTY {
		// End of stdin reaches a non-TTY process only through CloseIO,
		// asked once the reader is drained, as ctr does.
		stdin = &stdinCloser{r: stdin, close: func() {
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if e.proc != nil {
				e.proc.CloseIO(cctx, client.WithStdinCloser)
			}
		}}
	}
	opts := []cio.Opt{cio.WithStreams(stdin, eio.Stdout, eio.Stderr), cio.WithFIFODir(fifoDir)}
	if cfg.TTY {
		opts = append(opts, cio.WithTerminal)
	}
	return cio.NewCreator(opts...), nil
}

func parseUIDGID(s string) (uint32, uint32, error) {
	u, g, hasG := strings.Cut(s, ":")
	uid, err := strconv.ParseUint(u, 10, 32)
	if err != nil {
		return 0, 0, errs.New(errdefs.ErrInvalidArgument, "user %q: sessions take uid or uid:gid", s)
	}
	gid := uid
	if hasG {
		if gid, err = strconv.ParseUint(g, 10, 32); err != nil {
			return 0, 0, errs.New(errdefs.ErrInvalidArgument, "user %q: sessions take uid or uid:gid", s)
		}
	}
	return uint32(uid), uint32(gid), nil
}

type execProc struct {
	z    *Containerizer
	proc client.Process
	// after runs once the process is deleted (a debug container removes
	// itself there).
	after  func(ctx context.Context)
	exit   <-chan client.ExitStatus
	once   sync.Once
	mu     sync.Mutex
	exited bool
}

func (e *execProc) Resize(ctx context.Context, w, h uint32) error {
	return e.proc.Resize(ctx, w, h)
}

func (e *execProc) Wait(ctx context.Context) (int32, error) {
	select {
	case st := <-e.exit:
		e.mu.Lock()
		e.exited = true
		e.mu.Unlock()
		if io := e.proc.IO(); io != nil {
			io.Wait() // the output is copied
		}
		code, _, err := st.Result()
		return int32(code), err
	case <-ctx.Done():
		return -1, ctx.Err()
	}
}

func (e *execProc) Close() error {
	var err error
	e.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.mu.Lock()
		exited := e.exited
		e.mu.Unlock()
		if !exited {
			e.proc.Kill(ctx, syscall.SIGKILL)
			select {
			case <-e.exit:
			case <-ctx.Done():
			}
		}
		// Delete also closes and removes the session's FIFOs.
		if _, derr := e.proc.Delete(ctx, client.WithProcessKill); derr != nil && !errdefs.IsNotFound(derr) {
			err = derr
		}
		if e.after != nil {
			e.after(ctx)
		}
	})
	return err
}

// stdinCloser calls close once its reader has returned EOF.
type stdinCloser struct {
	r     io.Reader
	close func()
	once  sync.Once
}

func (s *stdinCloser) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err == io.EOF {
		s.once.Do(s.close)
	}
	return n, err
}

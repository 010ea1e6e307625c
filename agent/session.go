package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// sessions counts open debug sessions against the config's cap.
type sessions struct {
	open atomic.Int64
	max  int64
	mu   sync.Mutex // serializes audit log writes
}

// auditRecord is one line of the audit log: every session, who opened it,
// what it ran and how it ended.
type auditRecord struct {
	Time        time.Time `json:"time"`
	Identity    string    `json:"identity"`
	ContainerID string    `json:"container_id"`
	Command     []string  `json:"command"`
	TTY         bool      `json:"tty"`
	// Image is a debug container's image.
	Image      string `json:"image,omitempty"`
	ExitCode   *int32 `json:"exit_code,omitempty"`
	Error      string `json:"error,omitempty"`
	BytesIn    int64  `json:"bytes_in"`
	BytesOut   int64  `json:"bytes_out"`
	DurationMS int64  `json:"duration_ms"`
}

func (a *Agent) audit(r auditRecord) {
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	path := a.cfg.AuditLog
	if path == "" {
		path = filepath.Join(a.cfg.WorkDir, "audit.log")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		a.log.Error("writing the audit log", "err", err)
		return
	}
	defer f.Close()
	b, _ := json.Marshal(r)
	f.Write(append(b, '\n'))
}

// frameWriter sends output frames; gRPC allows one Send at a time.
type frameWriter struct {
	mu     *sync.Mutex
	stream agentv1.Agent_LaunchNestedContainerSessionServer
	stderr bool
	n      *atomic.Int64
}

func (w frameWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	resp := &agentv1.SessionResponse{Frame: &agentv1.SessionResponse_Stdout{Stdout: p}}
	if w.stderr {
		resp.Frame = &agentv1.SessionResponse_Stderr{Stderr: p}
	}
	if err := w.stream.Send(resp); err != nil {
		return 0, err
	}
	w.n.Add(int64(len(p)))
	return len(p), nil
}

func badFrame(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

func (s *server) LaunchNestedContainerSession(stream agentv1.Agent_LaunchNestedContainerSessionServer) (err error) {
	if err := s.a.admit(); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	launch := first.GetLaunch()
	if launch == nil {
		return badFrame("the first message of a session must be its launch (SessionLaunch), not %T", first.GetFrame())
	}
	if err := checkID(launch.GetContainerId()); err != nil {
		return err
	}
	if len(launch.GetCommand()) == 0 && launch.GetImage() == "" {
		return badFrame("the launch names no command")
	}
	if sz := launch.GetSize(); sz != nil && (sz.Width == 0 || sz.Height == 0) {
		return badFrame("window size %dx%d: both must be positive", sz.Width, sz.Height)
	}
	if n := s.a.sessions.open.Add(1); n > s.a.sessions.max {
		s.a.sessions.open.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "this agent allows %d sessions at once (max_sessions): close one first", s.a.sessions.max)
	}
	defer s.a.sessions.open.Add(-1)

	identity, _ := s.a.authz.roleOf(stream.Context())
	rec := auditRecord{Time: time.Now().UTC(), Identity: identity, ContainerID: launch.ContainerId, Command: launch.Command, TTY: launch.Tty, Image: launch.GetImage()}
	var bytesIn, bytesOut atomic.Int64
	defer func() {
		rec.BytesIn, rec.BytesOut = bytesIn.Load(), bytesOut.Load()
		rec.DurationMS = time.Since(rec.Time).Milliseconds()
		if err != nil {
			rec.Error = err.Error()
		}
		s.a.audit(rec)
	}()

	ctx, done := s.a.longCall(stream.Context())
	defer done()
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	var sendMu sync.Mutex
	cfg := containerizer.ExecConfig{Args: launch.Command, Env: launch.Env, User: launch.User, WorkingDir: launch.WorkingDir, TTY: launch.Tty,
		Image: launch.GetImage(), Resources: resourcesFromProto(launch.GetResources())}
	if sz := launch.GetSize(); sz != nil {
		cfg.Width, cfg.Height = sz.Width, sz.Height
	}
	ex, err := s.cz().Exec(ctx, containerizer.ContainerID(launch.ContainerId), cfg, containerizer.ExecIO{
		Stdin:  stdinR,
		Stdout: frameWriter{mu: &sendMu, stream: stream, n: &bytesOut},
		Stderr: frameWriter{mu: &sendMu, stream: stream, stderr: true, n: &bytesOut},
	})
	if err != nil {
		return toStatus(err)
	}
	defer ex.Close() // the client vanished or the session ended: nothing stays
	s.a.log.Info("session opened", "container_id", launch.ContainerId, "identity", identity, "tty", launch.Tty)

	// A bad client frame ends the wait with its error as the cause.
	waitCtx, endWait := context.WithCancelCause(ctx)
	defer endWait(nil)
	// Client frames, until the client closes or goes. This goroutine ends
	// when the handler returns: gRPC then fails its Recv.
	go func() {
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				stdinW.Close()
				return
			}
			if err != nil {
				return // the stream's context ends the session
			}
			switch f := m.GetFrame().(type) {
			case *agentv1.SessionRequest_Stdin:
				if _, err := stdinW.Write(f.Stdin); err == nil {
					bytesIn.Add(int64(len(f.Stdin)))
				}
			case *agentv1.SessionRequest_CloseStdin:
				stdinW.Close()
			case *agentv1.SessionRequest_Resize:
				if f.Resize.Width == 0 || f.Resize.Height == 0 {
					endWait(badFrame("window size %dx%d: both must be positive", f.Resize.Width, f.Resize.Height))
					return
				}
				ex.Resize(ctx, f.Resize.Width, f.Resize.Height)
			case *agentv1.SessionRequest_Launch:
				endWait(badFrame("a session takes one launch"))
				return
			}
		}
	}()
	code, werr := ex.Wait(waitCtx)
	if werr != nil {
		if cause := context.Cause(waitCtx); status.Code(cause) == codes.InvalidArgument {
			return cause
		}
		if errors.Is(werr, context.Canceled) {
			return s.a.stoppingErr(werr)
		}
		return toStatus(werr)
	}
	rec.ExitCode = &code
	sendMu.Lock()
	defer sendMu.Unlock()
	return stream.Send(&agentv1.SessionResponse{Frame: &agentv1.SessionResponse_Exit{Exit: &agentv1.SessionExit{ExitCode: code}}})
}

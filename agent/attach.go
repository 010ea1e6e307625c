package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// DefaultDetachKeys are Docker's: ctrl-p ctrl-q.
const DefaultDetachKeys = "ctrl-p,ctrl-q"

// ParseDetachKeys reads Docker's detach key format: comma-separated keys,
// each a single character or ctrl-X (X a letter or one of @[\]^_). "none"
// means no detach keys.
func ParseDetachKeys(s string) ([]byte, error) {
	if s == "" {
		s = DefaultDetachKeys
	}
	if s == "none" {
		return nil, nil
	}
	var out []byte
	for _, k := range strings.Split(s, ",") {
		if len(k) == 1 {
			out = append(out, k[0])
			continue
		}
		c, ok := strings.CutPrefix(strings.ToLower(k), "ctrl-")
		if !ok || len(c) != 1 {
			return nil, fmt.Errorf("detach key %q: give a single character or ctrl-X, comma-separated (e.g. %s)", k, DefaultDetachKeys)
		}
		switch b := c[0]; {
		case b >= 'a' && b <= 'z':
			out = append(out, b-'a'+1)
		case b == '@':
			out = append(out, 0)
		case b >= '[' && b <= '_':
			out = append(out, b-'['+27)
		default:
			return nil, fmt.Errorf("detach key %q: ctrl- takes a letter or one of @[\\]^_", k)
		}
	}
	return out, nil
}

// detacher finds the detach sequence in a stream of input, holding back
// what may be its beginning until the next bytes tell, as Docker does.
type detacher struct {
	keys []byte
	held int // keys[:held] were seen and not passed on
}

// feed returns what to pass on of p and whether the sequence was typed
// (what followed it in p is dropped).
func (d *detacher) feed(p []byte) ([]byte, bool) {
	if len(d.keys) == 0 {
		return p, false
	}
	out := make([]byte, 0, len(p)+d.held)
	for _, b := range p {
		if b == d.keys[d.held] {
			d.held++
			if d.held == len(d.keys) {
				return out, true
			}
			continue
		}
		out = append(out, d.keys[:d.held]...)
		d.held = 0
		if b == d.keys[0] {
			d.held = 1
			if len(d.keys) == 1 {
				return out, true
			}
			continue
		}
		out = append(out, b)
	}
	return out, false
}

func (s *server) AttachContainerInput(stream agentv1.Agent_AttachContainerInputServer) (err error) {
	if err := s.gate.admit(); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	start := first.GetStart()
	if start == nil {
		return badFrame("the first message must name the container (AttachInputStart), not %T", first.GetFrame())
	}
	if err := checkID(start.GetContainerId()); err != nil {
		return err
	}
	keys, err := ParseDetachKeys(start.GetDetachKeys())
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if sz := start.GetSize(); sz != nil && (sz.Width == 0 || sz.Height == 0) {
		return badFrame("window size %dx%d: both must be positive", sz.Width, sz.Height)
	}
	id := containerizer.ContainerID(start.GetContainerId())
	ctx, done := s.gate.longCall(stream.Context())
	defer done()
	at, err := s.execs.AttachInput(ctx, id)
	if err != nil {
		return toStatus(err)
	}
	var closeOnce sync.Once
	release := func() { closeOnce.Do(func() { at.Close() }) }
	defer release()
	identity, _ := s.authz.roleOf(stream.Context())
	rec, err := s.aud.beginAudit(auditRecord{Identity: identity, ContainerID: string(id), Command: []string{"attach"}, TTY: true})
	if err != nil {
		return err
	}
	defer func() { s.aud.endAudit(rec, err) }()
	s.log.Info("input attached", "container_id", id, "session_id", rec.SessionID, "identity", identity)
	if sz := start.GetSize(); sz != nil {
		at.Resize(ctx, sz.Width, sz.Height)
	}
	det := &detacher{keys: keys}
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil // the client let go; the container's stdin stays open
		}
		if err != nil {
			return s.gate.stoppingErr(err)
		}
		switch f := m.GetFrame().(type) {
		case *agentv1.AttachInputRequest_Stdin:
			out, detached := det.feed(f.Stdin)
			if len(out) > 0 {
				if _, err := at.Write(out); err != nil {
					return status.Errorf(codes.FailedPrecondition, "writing to the stdin of container %s: %v (has it exited?)", id, err)
				}
				rec.BytesIn += int64(len(out))
			}
			if detached {
				s.log.Info("input detached", "container_id", id, "identity", identity)
				// Free the writer's place before the client hears it is
				// detached: it may attach again at once.
				release()
				return stream.Send(&agentv1.AttachInputResponse{Frame: &agentv1.AttachInputResponse_Detached{Detached: &agentv1.Detached{}}})
			}
		case *agentv1.AttachInputRequest_CloseStdin:
			if err := at.CloseStdin(ctx); err != nil {
				return toStatus(err)
			}
			return nil
		case *agentv1.AttachInputRequest_Resize:
			if f.Resize.Width == 0 || f.Resize.Height == 0 {
				return badFrame("window size %dx%d: both must be positive", f.Resize.Width, f.Resize.Height)
			}
			at.Resize(ctx, f.Resize.Width, f.Resize.Height)
		case *agentv1.AttachInputRequest_Start:
			return badFrame("an attachment takes one start")
		}
	}
}

func (s *server) AttachContainerOutput(req *agentv1.AttachOutputRequest, stream agentv1.Agent_AttachContainerOutputServer) error {
	if err := checkID(req.GetContainerId()); err != nil {
		return err
	}
	id := containerizer.ContainerID(req.GetContainerId())
	ctx, done := s.gate.longCall(stream.Context())
	defer done()
	if _, err := s.containers.Get(ctx, id); err != nil {
		return toStatus(err)
	}
	lr := containerizer.LogsRequest{Follow: true, Tail: 0}
	if req.GetLogs() {
		lr.Tail = -1
	}
	err := s.containers.Logs(ctx, id, lr, func(ch containerizer.LogChunk) error {
		resp := &agentv1.AttachOutputResponse{Frame: &agentv1.AttachOutputResponse_Stdout{Stdout: ch.Data}}
		if ch.Stream == containerizer.Stderr {
			resp.Frame = &agentv1.AttachOutputResponse_Stderr{Stderr: ch.Data}
		}
		return stream.Send(resp)
	})
	if err != nil {
		return s.gate.stoppingErr(err)
	}
	c, err := s.containers.Wait(ctx, id)
	if err != nil {
		return s.gate.stoppingErr(err)
	}
	return stream.Send(&agentv1.AttachOutputResponse{Frame: &agentv1.AttachOutputResponse_Exit{Exit: containerToProto(c)}})
}

func (s *server) LaunchNestedContainer(ctx context.Context, req *agentv1.LaunchNestedContainerRequest) (_ *agentv1.LaunchNestedContainerResponse, err error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	if err := s.gate.admit(); err != nil {
		return nil, err
	}
	identity, _ := s.authz.roleOf(ctx)
	// The record is on disk before the container runs anything.
	rec := auditRecord{Event: auditLaunch, Time: time.Now().UTC(), Identity: identity, ContainerID: req.GetContainerId(), Command: req.GetCommand()}
	if err := s.aud.audit(rec); err != nil {
		return nil, status.Errorf(codes.Unavailable, "%v: nested launches are refused until the audit log can be written (check the disk and the config key audit_log)", err)
	}
	defer func() {
		if err != nil {
			rec.Event, rec.Error, rec.Time = auditLaunchFailed, err.Error(), time.Now().UTC()
			if aerr := s.aud.audit(rec); aerr != nil {
				s.log.Error("writing a failed nested launch to the audit log", "container_id", rec.ContainerID, "err", aerr)
			}
		}
	}()
	n, err := s.execs.LaunchNested(ctx, containerizer.NestedConfig{
		ID: containerizer.ContainerID(req.GetContainerId()), Args: req.GetCommand(), Env: req.GetEnv(),
		User: req.User, WorkingDir: req.WorkingDir,
	})
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("nested container launched", "container_id", n.ID, "identity", identity)
	return &agentv1.LaunchNestedContainerResponse{Container: nestedToProto(n)}, nil
}

func (s *server) WaitNestedContainer(ctx context.Context, req *agentv1.WaitNestedContainerRequest) (*agentv1.WaitNestedContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	ctx, done := s.gate.longCall(ctx)
	defer done()
	n, err := s.execs.WaitNested(ctx, containerizer.ContainerID(req.GetContainerId()))
	if err != nil {
		return nil, s.gate.stoppingErr(err)
	}
	return &agentv1.WaitNestedContainerResponse{Container: nestedToProto(n)}, nil
}

func (s *server) KillNestedContainer(ctx context.Context, req *agentv1.KillNestedContainerRequest) (*agentv1.KillNestedContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	sig, err := ParseSignal(req.GetSignal())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := s.execs.KillNested(ctx, containerizer.ContainerID(req.GetContainerId()), sig); err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.KillNestedContainerResponse{}, nil
}

func (s *server) RemoveNestedContainer(ctx context.Context, req *agentv1.RemoveNestedContainerRequest) (*agentv1.RemoveNestedContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	if err := s.execs.RemoveNested(ctx, containerizer.ContainerID(req.GetContainerId()), req.GetForce()); err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.RemoveNestedContainerResponse{}, nil
}

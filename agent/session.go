package agent

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/atomicfile"
	"github.com/gearboxd/gearbox/internal/peercred"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// sessions counts open debug sessions against the config's cap.
type sessions struct {
	open atomic.Int64
	max  int64
	mu   sync.Mutex // serializes audit log writes
	// readers are the sessions' client-frame readers, which outlive their
	// handler by a moment; Run waits for them once the server has stopped.
	readers sync.WaitGroup
	// bulk are the sessions whose stdout goes out on a connection of its
	// own (bulkout.go).
	bulk bulkOutputs
}

// auditRecord is one line of the audit log (JSON lines, work_dir/audit.log
// or audit_log). A session (exec, debug, attach) writes two, linked by
// session_id: "start" when it is admitted, before its command runs or its
// input flows, and "end" when it closes, with how it ended. So a session
// that is still running, or that an agent crash cut short, is in the log.
// A nested container's launch writes "launch" before it is launched, and
// "launch_failed" if it was not.
type auditRecord struct {
	Event     string `json:"event"`
	SessionID string `json:"session_id,omitempty"`
	// Time is when the event happened.
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

// Audit events.
const (
	auditStart        = "start"
	auditEnd          = "end"
	auditLaunch       = "launch"
	auditLaunchFailed = "launch_failed"
)

// beginAudit writes a session's start record and returns it, to be
// completed and handed to endAudit. The record is on disk (fsynced) before
// beginAudit returns, so before the session runs anything. An audit log
// that cannot be written refuses the session: nothing runs untraced.
func (a *Agent) beginAudit(r auditRecord) (auditRecord, error) {
	var b [8]byte
	crand.Read(b[:])
	r.Event, r.SessionID, r.Time = auditStart, hex.EncodeToString(b[:]), time.Now().UTC()
	if err := a.audit(r); err != nil {
		return r, status.Errorf(codes.Unavailable, "%v: sessions are refused until the audit log can be written (check the disk and the config key audit_log)", err)
	}
	return r, nil
}

// endAudit writes a session's end record (durable when it returns, like
// every record); cause is how the session ended.
func (a *Agent) endAudit(r auditRecord, cause error) {
	r.DurationMS = time.Since(r.Time).Milliseconds()
	r.Event, r.Time = auditEnd, time.Now().UTC()
	if cause != nil {
		r.Error = cause.Error()
	}
	if err := a.audit(r); err != nil {
		a.log.Error("writing the end of a session to the audit log", "session_id", r.SessionID, "container_id", r.ContainerID, "err", err)
	}
}

// audit appends one record and fsyncs it (and the directory, when the
// write created the file): a record is durable when audit returns.
func (a *Agent) audit(r auditRecord) error {
	a.sessions.mu.Lock()
	defer a.sessions.mu.Unlock()
	path := a.cfg.AuditLog
	if path == "" {
		path = filepath.Join(a.cfg.WorkDir, "audit.log")
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("opening the audit log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("writing the audit log %s: %w", path, err)
	}
	b, _ := json.Marshal(r)
	if _, err := f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("writing the audit log %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing the audit log %s: %w", path, err)
	}
	if st.Size() == 0 {
		return atomicfile.SyncDir(filepath.Dir(path))
	}
	return nil
}

// outputQueue sends a session's output frames one Send at a time (gRPC
// allows no more): a pooled read that finds nothing queued and no Send
// under way is sent by the reader itself, anything else by run. Writes
// queue their bytes and return; while a Send is under way what arrives is
// merged, so frames grow under load (up
// to maxFrame) and a lone keystroke's echo still goes out at once. Writers
// wait while maxQueued bytes are queued: the process feels the client's
// pace.
type outputQueue struct {
	stream agentv1.Agent_LaunchNestedContainerSessionServer
	n      *atomic.Int64

	mu      sync.Mutex
	cond    *sync.Cond
	frames  []outFrame
	queued  int
	sending bool // a Send is under way (from run or from push)
	closing bool
	err     error
	done    chan struct{}
}

type outFrame struct {
	stderr bool
	data   []byte
	pooled *[]byte // data's buffer, from outputBufs: sessionCodec sends it
}

const (
	maxFrame  = 1 << 20
	maxQueued = 2 << 20
)

func newOutputQueue(stream agentv1.Agent_LaunchNestedContainerSessionServer, n *atomic.Int64) *outputQueue {
	q := &outputQueue{stream: stream, n: n, done: make(chan struct{})}
	q.cond = sync.NewCond(&q.mu)
	go q.run()
	return q
}

func (q *outputQueue) write(stderr bool, p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.queued >= maxQueued && q.err == nil {
		q.cond.Wait()
	}
	if q.err != nil {
		return 0, q.err
	}
	if k := len(q.frames); k > 0 && q.frames[k-1].stderr == stderr && q.frames[k-1].pooled == nil && len(q.frames[k-1].data)+len(p) <= maxFrame {
		q.frames[k-1].data = append(q.frames[k-1].data, p...)
	} else {
		q.frames = append(q.frames, outFrame{stderr: stderr, data: append(make([]byte, 0, len(p)), p...)})
	}
	q.queued += len(p)
	q.n.Add(int64(len(p)))
	q.cond.Broadcast()
	return len(p), nil
}

// push queues a pooled buffer as a frame of its own, without a copy.
func (q *outputQueue) push(stderr bool, bp *[]byte, n int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.queued >= maxQueued && q.err == nil {
		q.cond.Wait()
	}
	if q.err != nil {
		return q.err
	}
	q.n.Add(int64(n))
	f := outFrame{stderr: stderr, data: (*bp)[:n], pooled: bp}
	if len(q.frames) == 0 && !q.sending && !q.closing {
		// Nothing waits and nothing is being sent: send from here. Bulk
		// output then costs no hand-off to run per frame; meanwhile the
		// FIFO (1 MiB) holds what the process writes.
		q.sending = true
		q.mu.Unlock()
		err := q.send(f)
		q.mu.Lock()
		q.sending = false
		if err != nil && q.err == nil {
			q.err, q.frames = err, nil
		}
		q.cond.Broadcast()
		return err
	}
	q.frames = append(q.frames, f)
	q.queued += n
	q.cond.Broadcast()
	return nil
}

func (q *outputQueue) run() {
	defer close(q.done)
	q.mu.Lock()
	defer q.mu.Unlock()
	for {
		for (len(q.frames) == 0 && !q.closing) || q.sending {
			q.cond.Wait()
		}
		if len(q.frames) == 0 {
			return
		}
		batch := q.frames
		q.frames = nil
		q.sending = true
		q.mu.Unlock()
		var err error
		for _, f := range batch {
			if err = q.send(f); err != nil {
				break
			}
		}
		q.mu.Lock()
		q.sending = false
		for _, f := range batch {
			q.queued -= len(f.data)
		}
		if err != nil {
			q.err = err
			q.frames = nil
			q.cond.Broadcast()
			return
		}
		q.cond.Broadcast()
	}
}

// busy says whether frames wait to be sent or are being sent.
func (q *outputQueue) busy() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.queued > 0 || q.sending
}

// send sends one frame. A pooled buffer goes to gRPC as it is
// (sessionCodec), which returns it to the pool once written: it is not
// the queue's any more.
func (q *outputQueue) send(f outFrame) error {
	if f.pooled != nil {
		*f.pooled = f.data
		return q.stream.SendMsg(outputChunk{stderr: f.stderr, buf: f.pooled})
	}
	resp := &agentv1.SessionResponse{Frame: &agentv1.SessionResponse_Stdout{Stdout: f.data}}
	if f.stderr {
		resp.Frame = &agentv1.SessionResponse_Stderr{Stderr: f.data}
	}
	return q.stream.Send(resp)
}

// flush waits until everything queued is sent (or sending failed); the
// queue sends nothing after it.
func (q *outputQueue) flush() error {
	q.mu.Lock()
	q.closing = true
	q.cond.Broadcast()
	q.mu.Unlock()
	<-q.done
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

// abort drops what is queued and fails further writes; it does not wait
// for a Send under way (the client may not be reading).
func (q *outputQueue) abort() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil {
		q.err = context.Canceled
	}
	q.frames = nil
	q.closing = true
	q.cond.Broadcast()
}

type queueWriter struct {
	q      *outputQueue
	stderr bool
}

func (w queueWriter) Write(p []byte) (int, error) { return w.q.write(w.stderr, p) }

// ReadFrom is how the exec's output copy reaches the queue (io.CopyBuffer
// prefers it): reads of up to readBuf straight into buffers the frames
// then own, from a FIFO grown to 1 MiB so that the shim writes in large
// pieces too.
//
// While frames wait to be sent, a read that came back short is topped up
// with what else the FIFO already holds (reads that do not wait), so that
// bulk output goes out in few large frames; when nothing waits, what was
// read goes at once, so an echo is not held back.
func (w queueWriter) ReadFrom(r io.Reader) (int64, error) {
	rc := growPipe(r)
	var total int64
	for {
		bp := outputBufs.Get(readBuf)
		n, err := r.Read(*bp)
		if n > 0 && n < readBuf && rc != nil && err == nil && w.q.busy() {
			n += topUp(rc, (*bp)[n:])
		}
		if n > 0 {
			if qerr := w.q.push(w.stderr, bp, n); qerr != nil {
				return total, qerr
			}
			total += int64(n)
		} else {
			outputBufs.Put(bp)
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// growPipe grows r's pipe (a FIFO) to 1 MiB, so that the shim writes in
// large pieces too, and returns its raw fd (nil if r has none).
func growPipe(r io.Reader) syscall.RawConn {
	sc, ok := r.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	rc.Control(func(fd uintptr) { unix.FcntlInt(fd, unix.F_SETPIPE_SZ, 1<<20) })
	return rc
}

// topUp reads into p what the FIFO holds now, in one read that does not
// wait; it returns how much it read.
func topUp(rc syscall.RawConn, p []byte) int {
	n := 0
	rc.Read(func(fd uintptr) bool {
		n, _ = unix.Read(int(fd), p)
		return true // never wait: EAGAIN (n < 0) ends the top-up
	})
	return max(n, 0)
}

// clientFrames reads a session's client frames: stdin, its end, resizes.
type clientFrames struct {
	stream agentv1.Agent_LaunchNestedContainerSessionServer
	stdin  *io.PipeWriter
	ex     containerizer.Exec
	in     *atomic.Int64
	// fail ends the session with a bad frame's error as the cause.
	fail context.CancelCauseFunc
}

func (c clientFrames) run(ctx context.Context) {
	for {
		m, err := c.stream.Recv()
		if err == io.EOF {
			c.stdin.Close()
			return
		}
		if err != nil {
			return // the stream's context ends the session
		}
		switch f := m.GetFrame().(type) {
		case *agentv1.SessionRequest_Stdin:
			if _, err := c.stdin.Write(f.Stdin); err == nil {
				c.in.Add(int64(len(f.Stdin)))
			}
		case *agentv1.SessionRequest_CloseStdin:
			c.stdin.Close()
		case *agentv1.SessionRequest_Resize:
			if f.Resize.Width == 0 || f.Resize.Height == 0 {
				c.fail(badFrame("window size %dx%d: both must be positive", f.Resize.Width, f.Resize.Height))
				return
			}
			c.ex.Resize(ctx, f.Resize.Width, f.Resize.Height)
		case *agentv1.SessionRequest_Launch:
			c.fail(badFrame("a session takes one launch"))
			return
		}
	}
}

func badFrame(format string, a ...any) error {
	return status.Errorf(codes.InvalidArgument, format, a...)
}

// sessionLaunch reads and checks a session's first frame: its launch.
func sessionLaunch(stream agentv1.Agent_LaunchNestedContainerSessionServer) (*agentv1.SessionLaunch, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	launch := first.GetLaunch()
	if launch == nil {
		return nil, badFrame("the first message of a session must be its launch (SessionLaunch), not %T", first.GetFrame())
	}
	if err := checkID(launch.GetContainerId()); err != nil {
		return nil, err
	}
	if len(launch.GetCommand()) == 0 && launch.GetImage() == "" {
		return nil, badFrame("the launch names no command")
	}
	if sz := launch.GetSize(); sz != nil && (sz.Width == 0 || sz.Height == 0) {
		return nil, badFrame("window size %dx%d: both must be positive", sz.Width, sz.Height)
	}
	return launch, nil
}

func (s *server) LaunchNestedContainerSession(stream agentv1.Agent_LaunchNestedContainerSessionServer) (err error) {
	if err := s.gate.admit(); err != nil {
		return err
	}
	launch, err := sessionLaunch(stream)
	if err != nil {
		return err
	}
	if n := s.sessions.open.Add(1); n > s.sessions.max {
		s.sessions.open.Add(-1)
		return status.Errorf(codes.ResourceExhausted, "this agent allows %d sessions at once (max_sessions): close one first", s.sessions.max)
	}
	defer s.sessions.open.Add(-1)

	identity, _ := s.authz.roleOf(stream.Context())
	rec, err := s.aud.beginAudit(auditRecord{Identity: identity, ContainerID: launch.ContainerId, Command: launch.Command, TTY: launch.Tty, Image: launch.GetImage()})
	if err != nil {
		return err
	}
	var bytesIn, bytesOut atomic.Int64
	defer func() {
		rec.BytesIn, rec.BytesOut = bytesIn.Load(), bytesOut.Load()
		s.aud.endAudit(rec, err)
	}()

	ctx, done := s.gate.longCall(stream.Context())
	defer done()
	stdinR, stdinW := io.Pipe()
	defer stdinW.Close()
	out := newOutputQueue(stream, &bytesOut)
	defer out.abort()
	stdout, endStdout, err := s.sessionStdout(ctx, stream, launch, out, &bytesOut)
	if err != nil {
		return err
	}
	defer endStdout()
	cfg := containerizer.ExecConfig{Args: launch.Command, Env: launch.Env, User: launch.User, WorkingDir: launch.WorkingDir, TTY: launch.Tty,
		Image: launch.GetImage(), Resources: resourcesFromProto(launch.GetResources())}
	if sz := launch.GetSize(); sz != nil {
		cfg.Width, cfg.Height = sz.Width, sz.Height
	}
	ex, err := s.execs.Exec(ctx, containerizer.ContainerID(launch.ContainerId), cfg, containerizer.ExecIO{
		Stdin:  stdinR,
		Stdout: stdout,
		Stderr: queueWriter{q: out, stderr: true},
	})
	if err != nil {
		return toStatus(err)
	}
	defer ex.Close() // the client vanished or the session ended: nothing stays
	s.log.Info("session opened", "container_id", launch.ContainerId, "session_id", rec.SessionID, "identity", identity, "tty", launch.Tty)

	// A bad client frame ends the wait with its error as the cause.
	waitCtx, endWait := context.WithCancelCause(ctx)
	defer endWait(nil)
	// Client frames, until the client closes or goes. The reader ends
	// once the handler has returned (gRPC then fails its Recv, and the
	// deferred stdinW.Close ends a blocked Write), so the handler cannot
	// wait for it: the agent's readers group does, at shutdown.
	s.sessions.readers.Add(1)
	go func() {
		defer s.sessions.readers.Done()
		clientFrames{stream: stream, stdin: stdinW, ex: ex, in: &bytesIn, fail: endWait}.run(ctx)
	}()
	code, werr := ex.Wait(waitCtx)
	if werr != nil {
		if cause := context.Cause(waitCtx); status.Code(cause) == codes.InvalidArgument {
			return cause
		}
		if errors.Is(werr, context.Canceled) {
			return s.gate.stoppingErr(werr)
		}
		return toStatus(werr)
	}
	rec.ExitCode = &code
	if err := out.flush(); err != nil {
		return err
	}
	return stream.Send(&agentv1.SessionResponse{Frame: &agentv1.SessionResponse_Exit{Exit: &agentv1.SessionExit{ExitCode: code}}})
}

// sessionStdout is where a session's stdout goes: its frames, or with
// bulk_output asked for on the unix socket, a connection of its own
// (bulkout.go), whose token the client gets first. end closes that
// connection (the client has all the output).
func (s *server) sessionStdout(ctx context.Context, stream agentv1.Agent_LaunchNestedContainerSessionServer, launch *agentv1.SessionLaunch,
	out *outputQueue, n *atomic.Int64) (stdout io.Writer, end func(), err error) {
	if _, unixPeer := peercred.FromContext(stream.Context()); !launch.GetBulkOutput() || !unixPeer {
		return queueWriter{q: out}, func() {}, nil
	}
	slot := s.sessions.bulk.register()
	w := newBulkWriter(ctx, slot, n)
	if err := stream.Send(&agentv1.SessionResponse{Frame: &agentv1.SessionResponse_BulkOutput{BulkOutput: &agentv1.BulkOutput{Token: slot.token}}}); err != nil {
		w.close(&s.sessions.bulk)
		return nil, nil, err
	}
	return w, func() { w.close(&s.sessions.bulk) }, nil
}

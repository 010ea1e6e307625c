package agent

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gearboxd/gearbox/internal/bulkout"
)

// A session's bulk output (agent.v1 SessionLaunch.bulk_output) leaves
// through a unix connection of its own, as raw bytes: no gRPC frames, no
// proto wrapping, one large write per FIFO read, and the client reads it
// as it would the FIFO itself. The connection comes to the agent's unix
// socket, which splitListener shares between gRPC and these connections.

// bulkHandshake is how long a new connection on the unix socket has to
// say what it is (its first byte), and a bulk one to give its token.
const bulkHandshake = 10 * time.Second

// splitListener is the agent's unix listener: it hands gRPC the
// connections that start as HTTP/2 does, and bulk output connections to
// bulk. It looks at a connection's first byte without reading it
// (MSG_PEEK), so gRPC gets the *net.UnixConn itself (peer credentials come
// from it). Each new connection is looked at by a goroutine of its own,
// so one that says nothing holds up no other; Close waits for them.
type splitListener struct {
	net.Listener
	bulk  *bulkOutputs
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	mu    sync.Mutex
	err   error // the accept loop's, once it has ended
	// looking are the connections whose first byte is awaited: Close
	// ends the wait.
	looking map[*net.UnixConn]struct{}
}

func newSplitListener(l net.Listener, bulk *bulkOutputs) *splitListener {
	s := &splitListener{Listener: l, bulk: bulk, conns: make(chan net.Conn), done: make(chan struct{}),
		looking: map[*net.UnixConn]struct{}{}}
	s.wg.Add(1)
	go s.acceptLoop()
	return s
}

func (s *splitListener) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.Listener.Accept()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			s.Close()
			return
		}
		uc, ok := c.(*net.UnixConn)
		if !ok {
			c.Close()
			continue
		}
		// Session output and logs move in large pieces per wake-up of
		// the agent and of its client, not 208 KiB ones (as far as
		// net.core.wmem_max allows; the kernel spends the memory only
		// while a client lags).
		uc.SetWriteBuffer(4 << 20)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.route(uc)
		}()
	}
}

// route looks at a new connection's first byte and gives it to gRPC or
// to the bulk outputs.
func (s *splitListener) route(uc *net.UnixConn) {
	uc.SetReadDeadline(time.Now().Add(bulkHandshake))
	s.mu.Lock()
	s.looking[uc] = struct{}{}
	select {
	case <-s.done: // closed before Close could see uc
		uc.SetReadDeadline(time.Now())
	default:
	}
	s.mu.Unlock()
	first, err := peekByte(uc)
	s.mu.Lock()
	delete(s.looking, uc)
	s.mu.Unlock()
	if err != nil {
		uc.Close()
		return
	}
	if bulkout.IsBulk(first) {
		s.bulk.attach(uc)
		return
	}
	uc.SetReadDeadline(time.Time{})
	select {
	case s.conns <- uc:
	case <-s.done:
		uc.Close()
	}
}

// peekByte waits for the connection's first byte (until its read
// deadline) and returns it, leaving it to be read.
func peekByte(uc *net.UnixConn) (byte, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var b [1]byte
	var n int
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		n, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
		return !errors.Is(perr, unix.EAGAIN)
	})
	switch {
	case err != nil:
		return 0, err
	case perr != nil:
		return 0, perr
	case n == 0:
		return 0, io.EOF
	}
	return b[0], nil
}

func (s *splitListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.err != nil && !errors.Is(s.err, net.ErrClosed) {
			return nil, s.err
		}
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections still being looked at are closed
// once their first byte or their deadline comes.
func (s *splitListener) Close() error {
	var err error
	s.once.Do(func() {
		close(s.done)
		err = s.Listener.Close()
		s.mu.Lock()
		for uc := range s.looking {
			uc.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
	})
	return err
}

// wait waits for the accept loop and the connections it was looking at
// (after Close).
func (s *splitListener) wait() { s.wg.Wait() }

// bulkOutputs are the sessions waiting for, or writing to, a bulk output
// connection, by token.
type bulkOutputs struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[string]*bulkSlot
}

// bulkSlot is one session's bulk output: the connection its client opens
// arrives on conn (once).
type bulkSlot struct {
	token []byte
	conn  chan *net.UnixConn
}

func (b *bulkOutputs) register() *bulkSlot {
	token := make([]byte, bulkout.TokenLen)
	crand.Read(token)
	slot := &bulkSlot{token: token, conn: make(chan *net.UnixConn, 1)}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[string]*bulkSlot{}
	}
	b.m[string(token)] = slot
	return slot
}

// release forgets the slot; a connection that came for it and was not
// taken is closed.
func (b *bulkOutputs) release(slot *bulkSlot) {
	b.mu.Lock()
	delete(b.m, string(slot.token))
	b.mu.Unlock()
	select {
	case c := <-slot.conn:
		c.Close()
	default:
	}
}

// attach reads a bulk connection's magic and token and gives it to its
// session; a bad or unknown token closes it. A token opens one connection.
func (b *bulkOutputs) attach(uc *net.UnixConn) {
	hello := make([]byte, len(bulkout.Magic)+bulkout.TokenLen)
	if _, err := io.ReadFull(uc, hello); err != nil || string(hello[:len(bulkout.Magic)]) != bulkout.Magic {
		b.log.Warn("refused a bulk output connection: no greeting", "err", err)
		uc.Close()
		return
	}
	uc.SetReadDeadline(time.Time{})
	b.mu.Lock()
	slot := b.m[string(hello[len(bulkout.Magic):])]
	delete(b.m, string(hello[len(bulkout.Magic):]))
	b.mu.Unlock()
	if slot == nil {
		b.log.Warn("refused a bulk output connection: unknown token (the session ended, or the token was used)")
		uc.Close()
		return
	}
	slot.conn <- uc // buffered, and only one attach finds the slot
}

// bulkWriter is a session's stdout in bulk mode: it waits for the client's
// connection, then copies the output to it in large writes. At the end of
// the output it shuts the connection's writing side: the client sees EOF.
type bulkWriter struct {
	ctx  context.Context
	slot *bulkSlot
	n    *atomic.Int64
	stop chan struct{} // closed by close

	mu        sync.Mutex
	uc        *net.UnixConn
	closed    bool
	unhookCtx func() bool
}

var errBulkClosed = errors.New("the session's bulk output is closed")

func newBulkWriter(ctx context.Context, slot *bulkSlot, n *atomic.Int64) *bulkWriter {
	return &bulkWriter{ctx: ctx, slot: slot, n: n, stop: make(chan struct{})}
}

// conn waits for the client's connection (one caller at a time: the
// output's copy). Once the session's context ends the connection is
// closed, which ends a write the client does not read.
func (w *bulkWriter) conn() (*net.UnixConn, error) {
	w.mu.Lock()
	uc, closed := w.uc, w.closed
	w.mu.Unlock()
	if closed {
		return nil, errBulkClosed
	}
	if uc != nil {
		return uc, nil
	}
	select {
	case uc = <-w.slot.conn:
	case <-w.stop:
		return nil, errBulkClosed
	case <-w.ctx.Done():
		return nil, fmt.Errorf("waiting for the client's bulk output connection: %w", context.Cause(w.ctx))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		uc.Close()
		return nil, errBulkClosed
	}
	w.uc = uc
	w.unhookCtx = context.AfterFunc(w.ctx, func() { uc.Close() })
	return uc, nil
}

func (w *bulkWriter) Write(p []byte) (int, error) {
	uc, err := w.conn()
	if err != nil {
		return 0, err
	}
	return countingWriter{uc, w.n}.Write(p)
}

// ReadFrom copies the output (the exec's FIFO, which io.CopyBuffer hands
// here) with reads of up to 1 MiB, from a FIFO grown to 1 MiB, and shuts
// the connection's writing side at the output's end.
//
// From a pipe, the output is spliced: the kernel moves the pipe's pages
// to the socket, the agent copies nothing.
func (w *bulkWriter) ReadFrom(r io.Reader) (int64, error) {
	rc := growPipe(r)
	uc, err := w.conn()
	if err != nil {
		return 0, err
	}
	var n int64
	spliced := false
	if rc != nil {
		n, spliced, err = spliceOut(rc, uc, w.n)
	}
	if !spliced {
		var k int64
		k, err = bulkout.Copy(countingWriter{uc, w.n}, r)
		n += k
	}
	if err != nil {
		return n, err
	}
	return n, uc.CloseWrite()
}

// spliceOut splices the pipe src to dst until the pipe's EOF, adding what
// it moved to count. handled=false: splice is refused here (nothing was
// moved), copy instead.
func spliceOut(src syscall.RawConn, dst *net.UnixConn, count *atomic.Int64) (total int64, handled bool, err error) {
	dc, err := dst.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	pfd := -1
	src.Control(func(fd uintptr) { pfd = int(fd) })
	for {
		avail, first, eof, err := pipeReady(src)
		switch {
		case err != nil:
			return total, true, err
		case eof:
			return total, true, nil
		case first != nil:
			// A byte came between asking and reading: it goes as is.
			k, err := dst.Write(first)
			total += int64(k)
			count.Add(int64(k))
			if err != nil {
				return total, true, err
			}
			continue
		}
		var k int64
		var serr error
		werr := dc.Write(func(sfd uintptr) bool {
			k, serr = unix.Splice(pfd, nil, int(sfd), nil, avail, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return !errors.Is(serr, unix.EAGAIN) // EAGAIN: the socket is full (the pipe is not empty)
		})
		if werr == nil {
			werr = serr
		}
		if werr != nil {
			if total == 0 && (errors.Is(werr, unix.EINVAL) || errors.Is(werr, unix.ENOSYS)) {
				return 0, false, nil
			}
			return total, true, werr
		}
		total += k
		count.Add(k)
		if k < coalesceBelow {
			// A writer of small chunks (4 KiB: head, cat) wakes the
			// agent at each one; letting a few hundred gather costs
			// the output at most coalesceWait and the agent (and the
			// client reading the socket) far fewer wake-ups.
			time.Sleep(coalesceWait)
		}
	}
}

// After a splice of less than coalesceBelow, the next waits coalesceWait
// for more to gather in the (1 MiB) pipe.
const (
	coalesceBelow = 256 << 10
	coalesceWait  = time.Millisecond
)

// pipeReady waits until the pipe holds bytes (avail, how many) or is at
// its end (eof). Telling an empty pipe from its end takes a read: a byte
// that this read finds after all is returned in first.
func pipeReady(src syscall.RawConn) (avail int, first []byte, eof bool, err error) {
	var one [1]byte
	var perr error
	rerr := src.Read(func(fd uintptr) bool {
		// FIONREAD (TIOCINQ) of a pipe: the bytes it holds.
		if avail, perr = unix.IoctlGetInt(int(fd), unix.TIOCINQ); perr != nil || avail > 0 {
			return true
		}
		k, rerr := unix.Read(int(fd), one[:])
		switch {
		case k == 1:
			first = one[:]
		case k == 0 && rerr == nil:
			eof = true
		case errors.Is(rerr, unix.EAGAIN):
			return false // empty: wait for the pipe
		default:
			perr = rerr
		}
		return true
	})
	return avail, first, eof, errors.Join(rerr, perr)
}

// countingWriter adds what it writes to n.
type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// close ends the bulk output: the connection is closed (EOF for a client
// that has all the output) and the slot forgotten. It does not wait.
func (w *bulkWriter) close(b *bulkOutputs) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	close(w.stop)
	if w.uc != nil {
		w.unhookCtx()
		w.uc.Close()
	}
	b.release(w.slot)
}

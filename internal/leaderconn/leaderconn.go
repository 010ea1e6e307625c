// Package leaderconn gives a client of a replicated gearbox master (HA on
// etcd) a connection to whichever master leads. A Conn takes the list of
// masters and the dial options (TLS) once, and is a
// grpc.ClientConnInterface: generated clients (Operator, AgentGateway,
// Scheduler) are built on it as on a *grpc.ClientConn.
//
// How it finds the leader:
//
//	leader known?  ── yes ──> call it
//	     │ no
//	     v
//	next master of the list (in order) ── dead (cannot connect) ──> the next one, after a back-off
//	     │ answers
//	     v
//	NOT_LEADER "leader" = host:port ──> that master, at once (same dial options)
//	NOT_LEADER, no leader named     ──> the next master, after a back-off
//	anything else                   ──> it leads: the answer is the caller's
//
// A unary call a standby refused with NOT_LEADER did not run, so it is sent
// again at the leader; any other failure is returned as it is (a LaunchTask
// that may have run is never sent twice). A master that cannot be connected
// to was sent nothing. A call gives up when every master of the list is dead
// in a row, or after Config.LeaderWait without finding a leader, with an
// error that matches ErrNoMaster.
//
// Streams (an agent's Connect, a framework's subscription, event
// subscriptions) are opened at the leader as known; a stream's failure
// teaches the Conn as a unary call's does (the hint a standby answered
// with, a leader whose connection failed), so the caller's own loop, which
// opens it again, reaches the new leader.
package leaderconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// ErrNoMaster: no master could be reached, or none leads.
var ErrNoMaster = errors.New("no master leads or answers")

// Config is how a Conn reaches the masters.
type Config struct {
	// Masters are the masters' addresses (see CheckAddress), tried in
	// this order when the leader is not known.
	Masters []string
	// DialOptions apply to every master, the ones a hint names included
	// (transport credentials, keepalive, message sizes).
	DialOptions []grpc.DialOption
	Log         *slog.Logger
	// Back-off between masters that are dead or know no leader:
	// MinBackoff doubling up to MaxBackoff, with jitter (100ms, 5s).
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds one connection attempt (5s).
	DialTimeout time.Duration
	// LeaderWait bounds how long one call looks for a leader while
	// masters answer that none leads (an election under way) (30s).
	LeaderWait time.Duration
}

// Conn is a connection to the leading master.
type Conn struct {
	cfg Config

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn // by address
	leader string                      // the address believed to lead, "" unknown
	next   int                         // the list's entry to try when no leader is known
	closed bool
}

var _ grpc.ClientConnInterface = (*Conn)(nil)

// New checks the addresses and makes a Conn; it connects nothing until
// the first call.
func New(cfg Config) (*Conn, error) {
	if len(cfg.Masters) == 0 {
		return nil, fmt.Errorf("no master address given")
	}
	for i, a := range cfg.Masters {
		if err := CheckAddress(a); err != nil {
			return nil, fmt.Errorf("master address %d (%q): %w", i+1, a, err)
		}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.LeaderWait <= 0 {
		cfg.LeaderWait = 30 * time.Second
	}
	cfg.Masters = slices.Clone(cfg.Masters)
	// gRPC waits a second before it reconnects after a failed attempt. A
	// newly elected master replaces its server on the same port, so a
	// connection kept from before it led can meet one refusal: try again
	// sooner. The caller's options come after, and win.
	cfg.DialOptions = append([]grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: cfg.MaxBackoff},
		MinConnectTimeout: cfg.DialTimeout,
	})}, cfg.DialOptions...)
	return &Conn{cfg: cfg, conns: map[string]*grpc.ClientConn{}}, nil
}

// Leader is the address of the master last seen leading ("" when none is
// known yet).
func (c *Conn) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// Forget is a caller's word that the master at addr stopped answering
// (a stream that heard nothing for too long: a paused or cut-off master,
// whose connection may still look alive): it is no longer taken for the
// leader, and it is connected to anew when next tried.
func (c *Conn) Forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forgetLocked(addr)
	if cc := c.conns[addr]; cc != nil {
		cc.Close()
		delete(c.conns, addr)
	}
}

// Masters is the list the Conn was given.
func (c *Conn) Masters() []string { return slices.Clone(c.cfg.Masters) }

// Close closes every connection; calls under way end.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for a, cc := range c.conns {
		errs = append(errs, cc.Close())
		delete(c.conns, a)
	}
	return errors.Join(errs...)
}

// Invoke sends a unary call to the leader, again at the leader when a
// standby refused it.
func (c *Conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	w := c.newWalk()
	for {
		addr, cc, err := c.connect(ctx, w)
		if err != nil {
			return err
		}
		err = cc.Invoke(ctx, method, args, reply, opts...)
		if !c.learn(addr, cc, err) {
			return err
		}
		if err := w.refused(ctx, addr, err); err != nil {
			return err
		}
	}
}

// NewStream opens a stream at the leader as known; what its end says
// (NOT_LEADER, a connection lost) is learnt for the next one.
func (c *Conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	addr, cc, err := c.connect(ctx, c.newWalk())
	if err != nil {
		return nil, err
	}
	s, err := cc.NewStream(ctx, desc, method, opts...)
	if err != nil {
		c.learn(addr, cc, err)
		return nil, err
	}
	return &stream{ClientStream: s, c: c, addr: addr, cc: cc}, nil
}

type stream struct {
	grpc.ClientStream
	c     *Conn
	addr  string
	cc    *grpc.ClientConn
	heard bool
}

func (s *stream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	switch {
	case err == nil && !s.heard:
		s.heard = true
		s.c.learn(s.addr, s.cc, nil)
	case err != nil && !errors.Is(err, io.EOF):
		s.c.learn(s.addr, s.cc, err)
	}
	return err
}

// learn updates who leads from a master's answer to a call; retry says
// whether the call was refused by a standby (it did not run).
func (c *Conn) learn(addr string, cc *grpc.ClientConn, err error) (retry bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if hint, ok := typesv1.LeaderHint(err); ok {
		if hint != "" && c.resolveLocked(hint) != addr {
			c.leader = c.resolveLocked(hint)
			c.cfg.Log.Debug("following the leader a standby named", "master", addr, "leader", c.leader)
		} else {
			c.forgetLocked(addr)
		}
		return true
	}
	lost := status.Code(err) == codes.Unavailable &&
		(typesv1.ErrorReason(err) == typesv1.ErrorReasonMasterStopping || cc.GetState() != connectivity.Ready)
	switch {
	case lost:
		c.forgetLocked(addr)
	case status.Code(err) == codes.Canceled || status.Code(err) == codes.DeadlineExceeded:
		// the caller's: says nothing of the master
	default:
		c.leader = addr
	}
	return false
}

// forgetLocked drops addr as the leader and moves the list past it.
func (c *Conn) forgetLocked(addr string) {
	if c.leader == addr {
		c.leader = ""
	}
	if i := slices.Index(c.cfg.Masters, addr); i >= 0 {
		c.next = (i + 1) % len(c.cfg.Masters)
	}
}

// resolveLocked is the address for a leader's hint (host:port): the list's
// entry naming it, or the hint itself.
func (c *Conn) resolveLocked(hint string) string {
	for _, a := range c.cfg.Masters {
		if hostPort(a) == hint {
			return a
		}
	}
	return hint
}

// connect finds a master to call: the leader if known, else the list's
// next, moving on past masters that cannot be connected to.
func (c *Conn) connect(ctx context.Context, w *walk) (string, *grpc.ClientConn, error) {
	for {
		c.mu.Lock()
		addr := c.leader
		if addr == "" {
			addr = c.cfg.Masters[c.next]
		}
		cc, err := c.connLocked(addr)
		c.mu.Unlock()
		if err == nil {
			err = c.probe(ctx, cc)
		}
		if err == nil {
			return addr, cc, nil
		}
		if ctx.Err() != nil {
			return "", nil, status.FromContextError(ctx.Err()).Err()
		}
		c.cfg.Log.Debug("master does not answer", "master", addr, "err", err)
		c.mu.Lock()
		c.forgetLocked(addr)
		c.mu.Unlock()
		if err := w.dead(ctx, addr, err); err != nil {
			return "", nil, err
		}
	}
}

// connLocked is the connection to addr, made anew when the last one
// failed (so that a master back up is seen at once, not after gRPC's own
// reconnect back-off).
func (c *Conn) connLocked(addr string) (*grpc.ClientConn, error) {
	if c.closed {
		return nil, status.Error(codes.Canceled, "the master connection is closed")
	}
	cc := c.conns[addr]
	if cc != nil && cc.GetState() != connectivity.TransientFailure && cc.GetState() != connectivity.Shutdown {
		return cc, nil
	}
	if cc != nil {
		cc.Close()
	}
	cc, err := grpc.NewClient(target(addr), c.cfg.DialOptions...)
	if err != nil {
		return nil, fmt.Errorf("master address %q: %w", addr, err)
	}
	c.conns[addr] = cc
	return cc, nil
}

// probe says whether cc's master can be reached: at once when connected,
// else by a health check, which connects (and fails with the reason when
// the connection does).
func (c *Conn) probe(ctx context.Context, cc *grpc.ClientConn) error {
	if cc.GetState() == connectivity.Ready {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	_, err := healthpb.NewHealthClient(cc).Check(pctx, &healthpb.HealthCheckRequest{})
	switch status.Code(err) {
	case codes.Unavailable:
		return err
	case codes.DeadlineExceeded:
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("it did not connect within %s", c.cfg.DialTimeout)
	case codes.Canceled:
		return ctx.Err()
	}
	// It answered: whatever it said, it is there. gRPC may hand over the
	// answer before the channel reports Ready (it updates the picker
	// first), and learn reads the state to tell a lost connection from a
	// master's own Unavailable: wait for the state to catch up.
	for s := cc.GetState(); s == connectivity.Idle || s == connectivity.Connecting; s = cc.GetState() {
		if !cc.WaitForStateChange(pctx, s) {
			break
		}
	}
	return nil
}

// walk is one call's search for the leader.
type walk struct {
	c        *Conn
	deadline time.Time
	backoff  time.Duration
	deadRun  int // masters found dead in a row
	hops     int // hints followed since the last pause
	answered bool
	last     error
	lastMsg  string
}

func (c *Conn) newWalk() *walk {
	return &walk{c: c, deadline: time.Now().Add(c.cfg.LeaderWait), backoff: c.cfg.MinBackoff}
}

// dead: addr could not be connected to.
func (w *walk) dead(ctx context.Context, addr string, err error) error {
	w.deadRun++
	w.last = fmt.Errorf("%s: %w", addr, err)
	w.lastMsg = addr + ": " + status.Convert(err).Message()
	if w.deadRun >= len(w.c.cfg.Masters) && !w.answered {
		return w.fail("cannot reach any master")
	}
	return w.pause(ctx)
}

// refused: the master at addr is a standby.
func (w *walk) refused(ctx context.Context, addr string, err error) error {
	w.deadRun, w.answered = 0, true
	w.last = fmt.Errorf("%s: %w", addr, err)
	w.lastMsg = addr + ": " + status.Convert(err).Message()
	if hint, _ := typesv1.LeaderHint(err); hint != "" && w.hops < len(w.c.cfg.Masters) {
		w.hops++
		return nil
	}
	return w.pause(ctx)
}

func (w *walk) pause(ctx context.Context) error {
	if time.Now().After(w.deadline) {
		return w.fail(fmt.Sprintf("no master leads after %s", w.c.cfg.LeaderWait))
	}
	d := w.backoff + rand.N(w.backoff/2+1)
	w.backoff = min(w.backoff*2, w.c.cfg.MaxBackoff)
	w.hops = 0
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	case <-t.C:
		return nil
	}
}

func (w *walk) fail(what string) error {
	return &noMasterError{msg: fmt.Sprintf("%s (%s): last: %s", what, strings.Join(w.c.cfg.Masters, ", "), w.lastMsg), last: w.last}
}

// noMasterError is ErrNoMaster with what was tried; to gRPC's status
// functions it is Unavailable.
type noMasterError struct {
	msg  string
	last error
}

func (e *noMasterError) Error() string              { return e.msg }
func (e *noMasterError) Is(target error) bool       { return target == ErrNoMaster }
func (e *noMasterError) Unwrap() error              { return e.last }
func (e *noMasterError) GRPCStatus() *status.Status { return status.New(codes.Unavailable, e.msg) }

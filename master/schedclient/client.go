// Package schedclient is a Go client of gearbox's scheduler API
// (gearbox.scheduler.v1), for framework authors: it subscribes, keeps the
// framework ID and subscribes again with it (with back-off) whenever the
// connection ends, so the framework fails over to its tasks; it hands
// every event to the framework's handler in order, and offers calls
// (accept, decline, acknowledge, kill, reconcile, suppress, revive,
// teardown) and helpers to match offers.
//
// Status updates with a UUID must be acknowledged (Acknowledge) once the
// framework has acted on them; until then the master resends them, after
// re-subscriptions and master restarts too.
package schedclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Config is how a framework connects: to Masters (with DialOptions), or
// on Conn.
type Config struct {
	// Masters are the masters' addresses: host:port (also tcp://host:port),
	// or unix:///path for a master on this host; a replicated master's
	// (HA on etcd) several, in any order. The client subscribes with the
	// one that leads, and after a leader change subscribes again, with its
	// framework ID, with the new one.
	Masters []string
	// DialOptions apply to every master (transport credentials: mutual
	// TLS on TCP).
	DialOptions []grpc.DialOption
	// Conn is a connection to one master (grpc.NewClient), used when
	// Masters is empty.
	Conn grpc.ClientConnInterface
	// Info is the framework; Info.Id is set on re-subscription (from
	// OnSubscribed's ID, kept across restarts by the framework).
	Info *schedulerv1.FrameworkInfo
	// OnSubscribed is called with the framework ID on each subscription,
	// before any other event: keep it to fail over after a restart.
	OnSubscribed func(frameworkID string) error
	Log          *slog.Logger
	// Back-off between subscriptions: MinBackoff doubling up to
	// MaxBackoff (defaults 100ms and 5s).
	MinBackoff, MaxBackoff time.Duration
}

// Handler receives each event, in order. An error ends Run.
type Handler func(ctx context.Context, c *Client, ev *schedulerv1.Event) error

// Client is a framework's connection to the master; its calls go on the
// current subscription's stream.
type Client struct {
	cfg    Config
	conn   grpc.ClientConnInterface // Conn, or the leader's while Run runs
	mu     sync.Mutex
	id     string
	stream grpc.BidiStreamingClient[schedulerv1.Call, schedulerv1.Event]
}

// ErrNotConnected: a call was made while no subscription is up; it is
// not sent (calls are not queued: the master's state after the
// re-subscription decides what is still worth doing).
var ErrNotConnected = errors.New("not subscribed to the master right now")

// New makes a client; Run connects it.
func New(cfg Config) *Client {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Second
	}
	c := &Client{cfg: cfg}
	c.id = cfg.Info.GetId()
	return c
}

// FrameworkID is the framework's ID once subscribed.
func (c *Client) FrameworkID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.id
}

// Run subscribes and hands events to h until ctx ends, h fails, the
// framework is removed (NotFound or an ERROR event after teardown), or a
// subscription is refused for good (PermissionDenied, InvalidArgument).
// A connection that ends otherwise is subscribed again after a back-off,
// with the framework's ID.
func (c *Client) Run(ctx context.Context, h Handler) error {
	c.conn = c.cfg.Conn
	if len(c.cfg.Masters) > 0 {
		// Keepalive as the agent's: a master paused or cut off mid-stream
		// is found dead within 15 s; the caller's options come after it.
		dial := append([]grpc.DialOption{grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second})}, c.cfg.DialOptions...)
		lc, err := leaderconn.New(leaderconn.Config{Masters: c.cfg.Masters, DialOptions: dial, Log: c.cfg.Log,
			MinBackoff: c.cfg.MinBackoff, MaxBackoff: c.cfg.MaxBackoff})
		if err != nil {
			return err
		}
		defer lc.Close()
		c.conn = lc
	}
	if c.conn == nil {
		return errors.New("schedclient: Config names no master (Masters, or Conn)")
	}
	backoff := c.cfg.MinBackoff
	for {
		subscribed, err := c.once(ctx, h)
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.NotFound, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition:
			return err
		}
		var he handlerError
		if errors.As(err, &he) {
			return he.err
		}
		leader, notLeader := typesv1.LeaderHint(err)
		if subscribed || leader != "" {
			backoff = c.cfg.MinBackoff
		}
		switch {
		case leader != "":
			c.cfg.Log.Info("this master is a standby; subscribing with the leader it names", "leader", leader)
		case notLeader:
			c.cfg.Log.Info("no master leads at the moment (an election is under way); subscribing with the next", "in", backoff)
		default:
			c.cfg.Log.Info("scheduler connection ended; subscribing again", "err", err, "in", backoff)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, c.cfg.MaxBackoff)
	}
}

type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// once is one subscription.
func (c *Client) once(ctx context.Context, h Handler) (bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := schedulerv1.NewSchedulerClient(c.conn).Connect(sctx)
	if err != nil {
		return false, err
	}
	info := proto.Clone(c.cfg.Info).(*schedulerv1.FrameworkInfo)
	info.Id = c.FrameworkID()
	if err := stream.Send(&schedulerv1.Call{Call: &schedulerv1.Call_Subscribe_{Subscribe: &schedulerv1.Call_Subscribe{FrameworkInfo: info}}}); err != nil {
		return false, err
	}
	first, err := stream.Recv()
	if err != nil {
		return false, err
	}
	leader := ""
	if lc, ok := c.conn.(*leaderconn.Conn); ok {
		leader = lc.Leader() // the master that answered
	}
	sub := first.GetSubscribed()
	if sub == nil {
		return false, fmt.Errorf("the master answered subscribe with %T, not subscribed", first.GetEvent())
	}
	c.mu.Lock()
	c.id, c.stream = sub.GetFrameworkId(), stream
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.stream == stream {
			c.stream = nil
		}
		c.mu.Unlock()
	}()
	if c.cfg.OnSubscribed != nil {
		if err := c.cfg.OnSubscribed(sub.GetFrameworkId()); err != nil {
			return true, handlerError{err}
		}
	}
	if err := h(ctx, c, first); err != nil {
		return true, c.finish(stream, err)
	}
	// A connection that hears nothing for a few heartbeats is dead.
	silence := 3*sub.GetHeartbeatInterval().AsDuration() + time.Second
	watchdog := time.AfterFunc(silence, func() {
		if lc, ok := c.conn.(*leaderconn.Conn); ok {
			lc.Forget(leader) // paused or cut off: find the leader anew
		}
		cancel()
	})
	defer watchdog.Stop()
	for {
		ev, err := stream.Recv()
		if err != nil {
			return true, err
		}
		watchdog.Reset(silence)
		if err := h(ctx, c, ev); err != nil {
			return true, c.finish(stream, err)
		}
	}
}

// finish ends a subscription the handler ended: the calls it sent last
// (a teardown, say) reach the master before the stream is closed, as the
// master ends its side once it has read them (bounded to 5 s).
func (c *Client) finish(stream grpc.BidiStreamingClient[schedulerv1.Call, schedulerv1.Event], err error) error {
	c.mu.Lock()
	stream.CloseSend()
	c.stream = nil
	c.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	return handlerError{err}
}

// Call sends one call on the current subscription.
func (c *Client) Call(call *schedulerv1.Call) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream == nil {
		return ErrNotConnected
	}
	call.FrameworkId = c.id
	return c.stream.Send(call)
}

// Acknowledge acknowledges a status update (one with a UUID; others need
// none and are ignored here).
func (c *Client) Acknowledge(s *schedulerv1.TaskStatus) error {
	if s.GetUuid() == "" {
		return nil
	}
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Acknowledge_{Acknowledge: &schedulerv1.Call_Acknowledge{
		AgentId: s.GetAgentId(), TaskId: s.GetTaskId(), Uuid: s.GetUuid()}}})
}

// Accept launches operations on offers (of one agent).
func (c *Client) Accept(offerIDs []*schedulerv1.OfferID, refuseSeconds float64, ops ...*schedulerv1.Operation) error {
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Accept_{Accept: &schedulerv1.Call_Accept{
		OfferIds: offerIDs, Operations: ops, Filters: &schedulerv1.Filters{RefuseSeconds: &refuseSeconds}}}})
}

// Decline returns offers; their agents are not offered to this framework
// again for refuseSeconds.
func (c *Client) Decline(offerIDs []*schedulerv1.OfferID, refuseSeconds float64) error {
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Decline_{Decline: &schedulerv1.Call_Decline{
		OfferIds: offerIDs, Filters: &schedulerv1.Filters{RefuseSeconds: &refuseSeconds}}}})
}

// Kill kills a task.
func (c *Client) Kill(taskID string, grace time.Duration) error {
	k := &schedulerv1.Call_Kill{TaskId: taskID}
	if grace > 0 {
		k.KillPolicy = &typesv1.KillPolicy{GracePeriod: durationpb.New(grace)}
	}
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Kill_{Kill: k}})
}

// Reconcile asks for the latest state of tasks (none: implicit, all).
func (c *Client) Reconcile(taskIDs ...string) error {
	r := &schedulerv1.Call_Reconcile{}
	for _, id := range taskIDs {
		r.Tasks = append(r.Tasks, &schedulerv1.Call_Reconcile_Task{TaskId: id})
	}
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Reconcile_{Reconcile: r}})
}

// Suppress stops offers in roles (none: all); Revive resumes them.
func (c *Client) Suppress(roles ...string) error {
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Suppress_{Suppress: &schedulerv1.Call_Suppress{Roles: roles}}})
}

func (c *Client) Revive(roles ...string) error {
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Revive_{Revive: &schedulerv1.Call_Revive{Roles: roles}}})
}

// Teardown removes the framework: its tasks are killed.
func (c *Client) Teardown() error {
	return c.Call(&schedulerv1.Call{Call: &schedulerv1.Call_Teardown_{Teardown: &schedulerv1.Call_Teardown{}}})
}

// ---- offer helpers ----

// Resources sums an offer's resources over its roles.
func Resources(o *schedulerv1.Offer) *masterv1.Resources {
	r := &masterv1.Resources{}
	for _, rr := range o.GetResources() {
		r.Cpus += rr.GetResources().GetCpus()
		r.MemoryBytes += rr.GetResources().GetMemoryBytes()
		r.DiskBytes += rr.GetResources().GetDiskBytes()
	}
	return r
}

// Fits says whether want fits in have.
func Fits(want, have *masterv1.Resources) bool {
	return want.GetCpus() <= have.GetCpus()+1e-9 && want.GetMemoryBytes() <= have.GetMemoryBytes() && want.GetDiskBytes() <= have.GetDiskBytes()
}

// Take subtracts want from have, if it fits.
func Take(have, want *masterv1.Resources) bool {
	if !Fits(want, have) {
		return false
	}
	have.Cpus -= want.GetCpus()
	have.MemoryBytes -= want.GetMemoryBytes()
	have.DiskBytes -= want.GetDiskBytes()
	return true
}

// Task is a TaskInfo for image running cmd with res.
func Task(id, image string, cmd []string, res *masterv1.Resources) *schedulerv1.TaskInfo {
	c := &agentv1.LaunchContainerRequest{Image: image}
	if len(cmd) > 0 {
		c.Cmd = &agentv1.StringList{Values: cmd}
	}
	return &schedulerv1.TaskInfo{TaskId: id, Name: id, Resources: res, Container: c}
}

// Launch is a LAUNCH operation; LaunchGroup a LAUNCH_GROUP (all or none).
func Launch(tasks ...*schedulerv1.TaskInfo) *schedulerv1.Operation {
	return &schedulerv1.Operation{Type: schedulerv1.Operation_LAUNCH, Launch: &schedulerv1.Operation_Launch{TaskInfos: tasks}}
}

func LaunchGroup(tasks ...*schedulerv1.TaskInfo) *schedulerv1.Operation {
	return &schedulerv1.Operation{Type: schedulerv1.Operation_LAUNCH_GROUP,
		LaunchGroup: &schedulerv1.Operation_LaunchGroup{TaskGroup: &schedulerv1.TaskGroupInfo{Tasks: tasks}}}
}

// OfferIDs lists offers' IDs.
func OfferIDs(offers ...*schedulerv1.Offer) []*schedulerv1.OfferID {
	out := make([]*schedulerv1.OfferID, 0, len(offers))
	for _, o := range offers {
		out = append(out, o.GetId())
	}
	return out
}

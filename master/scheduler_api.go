package master

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/peercred"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// schedulerAPI serves gearbox.scheduler.v1: one Connect stream per
// framework connection.
type schedulerAPI struct {
	schedulerv1.UnimplementedSchedulerServer
	m *Master
}

type schedStream = grpc.BidiStreamingServer[schedulerv1.Call, schedulerv1.Event]

// Connect: subscribe first; then the framework's calls, each applied in
// the order sent, until either side ends. A call the master cannot take
// is answered with an ERROR event and the stream goes on; a call before
// subscribe, or of another framework ID, ends it.
func (s *schedulerAPI) Connect(stream schedStream) error {
	m := s.m
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	sub := first.GetSubscribe()
	if sub == nil {
		return status.Error(codes.FailedPrecondition, "the first call on a scheduler connection must be subscribe")
	}
	fi := sub.GetFrameworkInfo()
	if err := checkFrameworkInfo(fi); err != nil {
		return err
	}
	principal, authenticated := identity(stream.Context())
	if _, unix := peercred.FromContext(stream.Context()); unix {
		authenticated = false // root or the master's own user: any role
	}
	if err := m.mayRegister(principal, authenticated, fi.GetRoles()); err != nil {
		return err
	}
	m.mu.Lock()
	f, g, err := m.addFramework(fi, principal)
	m.mu.Unlock()
	if err != nil {
		return err
	}
	ctx := stream.Context()
	if err := m.p.wait(ctx, g); err != nil {
		return status.Errorf(codes.Unavailable, "the registry could not record framework %s: %v", f.ID, err)
	}
	c := newFwConn()
	m.mu.Lock()
	if m.frameworks[f.ID] != f {
		m.mu.Unlock()
		return status.Errorf(codes.NotFound, "framework %s was removed while it subscribed", f.ID)
	}
	m.connectFramework(f, c, fi.GetId() == "")
	m.mu.Unlock()
	defer func() {
		c.close(nil)
		m.mu.Lock()
		m.disconnectFramework(f, c)
		m.mu.Unlock()
	}()
	sendErr := make(chan error, 1)
	m.streamLoops.Go(func() { sendErr <- s.sendLoop(ctx, c, stream) })
	recvErr := make(chan error, 1)
	m.streamLoops.Go(func() { recvErr <- s.recvLoop(ctx, f, c, stream) })
	var result error
	select {
	case err := <-recvErr:
		result = err
	case <-c.done:
		result = c.err()
	case err := <-sendErr:
		result = err
	}
	c.close(nil)
	if errors.Is(result, context.Canceled) || status.Code(result) == codes.Canceled {
		result = nil
	}
	return result
}

// sendLoop sends queued events, and a HEARTBEAT when nothing was sent for
// --framework-heartbeat.
func (s *schedulerAPI) sendLoop(ctx context.Context, c *fwConn, stream schedStream) error {
	hb := time.NewTimer(s.m.cfg.FrameworkHeartbeat)
	defer hb.Stop()
	for {
		var ev *schedulerv1.Event
		select {
		case ev = <-c.out:
		case <-hb.C:
			ev = &schedulerv1.Event{Event: &schedulerv1.Event_Heartbeat_{Heartbeat: &schedulerv1.Event_Heartbeat{}}}
		case <-c.done:
			return nil
		case <-ctx.Done():
			return nil
		}
		if err := stream.Send(ev); err != nil {
			return err
		}
		hb.Reset(s.m.cfg.FrameworkHeartbeat)
	}
}

func (s *schedulerAPI) recvLoop(ctx context.Context, f *frameworkEntry, c *fwConn, stream schedStream) error {
	m := s.m
	// Accepted tasks go to their agents from a goroutine of their own, in
	// order, once durable: the next calls need not wait for the registry,
	// and the launches of many accepts share its group commits. A
	// framework that disconnects does not stop what it accepted.
	type accepted struct {
		tasks []*store.Task
		gen   uint64
	}
	launches := make(chan accepted, 256)
	launcherDone := make(chan struct{})
	go func() {
		defer close(launcherDone)
		for l := range launches {
			m.sendLaunches(context.WithoutCancel(ctx), l.tasks, l.gen)
		}
	}()
	defer func() { close(launches); <-launcherDone }()
	for {
		call, err := stream.Recv()
		if err != nil {
			return err
		}
		if call.GetFrameworkId() != f.ID {
			return status.Errorf(codes.InvalidArgument, "call for framework %q on the connection of framework %s: every call names the framework this connection subscribed", call.GetFrameworkId(), f.ID)
		}
		if _, ok := call.GetCall().(*schedulerv1.Call_Accept_); ok {
			m.mu.Lock()
			if m.frameworks[f.ID] != f || f.conn != c {
				m.mu.Unlock()
				return nil
			}
			tasks, gen := m.accept(f, call.GetAccept())
			m.mu.Unlock()
			if len(tasks) > 0 {
				launches <- accepted{tasks, gen}
			}
			continue
		}
		g, stop, err := s.apply(f, c, call)
		if err != nil {
			m.mu.Lock()
			c.send(&schedulerv1.Event{Event: &schedulerv1.Event_Error_{Error: &schedulerv1.Event_Error{Message: err.Error()}}})
			m.mu.Unlock()
		}
		if g > 0 {
			m.p.wait(ctx, g)
		}
		if stop {
			return nil
		}
	}
}

// apply applies one call other than accept; stop: the connection ends
// (teardown).
func (s *schedulerAPI) apply(f *frameworkEntry, c *fwConn, call *schedulerv1.Call) (gen uint64, stop bool, err error) {
	m := s.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.frameworks[f.ID] != f || f.conn != c {
		return 0, true, nil
	}
	switch x := call.GetCall().(type) {
	case *schedulerv1.Call_Subscribe_:
		return 0, false, errors.New("this connection is subscribed already: to subscribe again, open a new connection")
	case *schedulerv1.Call_Decline_:
		m.decline(f, x.Decline.GetOfferIds(), x.Decline.GetFilters())
	case *schedulerv1.Call_Revive_:
		return 0, false, m.suppress(f, x.Revive.GetRoles(), false)
	case *schedulerv1.Call_Suppress_:
		return 0, false, m.suppress(f, x.Suppress.GetRoles(), true)
	case *schedulerv1.Call_Acknowledge_:
		return 0, false, m.acknowledge(f, x.Acknowledge)
	case *schedulerv1.Call_Kill_:
		m.killFrameworkTask(f, x.Kill)
	case *schedulerv1.Call_Reconcile_:
		m.reconcile(f, x.Reconcile)
	case *schedulerv1.Call_Teardown_:
		return m.removeFramework(f, "it tore itself down"), true, nil
	case *schedulerv1.Call_UpdateFramework_:
		return 0, false, m.updateFramework(f, c, x.UpdateFramework.GetFrameworkInfo())
	default:
		return 0, false, errors.New("unknown call: this master does not know it")
	}
	return 0, false, nil
}

// updateFramework changes the framework's info (UPDATE_FRAMEWORK): roles,
// name, failover timeout, capabilities. Callers hold m.mu.
func (m *Master) updateFramework(f *frameworkEntry, c *fwConn, fi *schedulerv1.FrameworkInfo) error {
	if err := checkFrameworkInfo(fi); err != nil {
		return errors.New(status.Convert(err).Message())
	}
	if fi.GetId() != f.ID {
		return fmt.Errorf("update_framework: framework_info.id %q is not this framework (%s)", fi.GetId(), f.ID)
	}
	authenticated := f.Principal != ""
	if err := m.mayRegister(f.Principal, authenticated, fi.GetRoles()); err != nil {
		return errors.New(status.Convert(err).Message())
	}
	m.applyFrameworkInfo(f, fi)
	m.p.markFramework(f.ID)
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_FRAMEWORK_UPDATED, Framework: m.frameworkToProto(f)})
	m.wakeAllocator()
	return nil
}

// killFrameworkTask kills one of the framework's tasks; an unknown one is
// answered TASK_UNKNOWN (TASK_LOST without PARTITION_AWARE), as Mesos.
// Callers hold m.mu.
func (m *Master) killFrameworkTask(f *frameworkEntry, k *schedulerv1.Call_Kill) {
	t := m.tasks[k.GetTaskId()]
	if t == nil || t.FrameworkID != f.ID {
		state, _ := frameworkState(f, typesv1.TaskState_TASK_UNKNOWN)
		m.refuseTask(f, refusal{k.GetTaskId(), state, typesv1.Reason_REASON_RECONCILIATION, "the master has no task of this framework with this ID"})
		return
	}
	if terminal(t.State) {
		return
	}
	t.KillRequested = true
	m.p.markTask(t.ID)
	if a := m.agents[t.AgentID]; a != nil && a.State == store.AgentActive && a.conn != nil {
		a.conn.send(killMsg(t.ID, k.GetKillPolicy().GetGracePeriod().AsDuration()))
	}
}

// reconcile answers each named task's latest state (explicit), or every
// task of the framework that is not terminal (implicit, none named), as
// updates without a uuid. Callers hold m.mu.
func (m *Master) reconcile(f *frameworkEntry, r *schedulerv1.Call_Reconcile) {
	send := func(t *store.Task) {
		state, _ := frameworkState(f, t.State)
		f.conn.send(updateEvent(&schedulerv1.TaskStatus{TaskId: t.ID, AgentId: t.AgentID, State: state,
			Reason: typesv1.Reason_REASON_RECONCILIATION, Message: t.Message, ExitCode: t.ExitCode,
			Timestamp: ts(t.UpdatedAt), Source: schedulerv1.TaskStatus_SOURCE_MASTER}))
	}
	if len(r.GetTasks()) == 0 {
		for _, t := range m.frameworkTasks(f.ID) {
			if !terminal(t.State) {
				send(t)
			}
		}
		return
	}
	for _, rt := range r.GetTasks() {
		if t := m.tasks[rt.GetTaskId()]; t != nil && t.FrameworkID == f.ID {
			send(t)
			continue
		}
		state, _ := frameworkState(f, typesv1.TaskState_TASK_UNKNOWN)
		m.refuseTask(f, refusal{rt.GetTaskId(), state, typesv1.Reason_REASON_RECONCILIATION, "the master has no task of this framework with this ID"})
	}
}

package master

// Frameworks: schedulers that use the cluster through the scheduler API
// (gearbox.scheduler.v1, scheduler_api.go). The master keeps each one in
// the registry (store.Framework) from its first subscription until it is
// torn down or stays disconnected longer than its failover_timeout; its
// tasks are store.Tasks with FrameworkID set.
//
// Reliable status updates (Mesos's at-least-once, in-order rule). Where an
// update of a framework's task lives until the framework acknowledges it:
//
//  1. On the agent: its status update manager checkpoints the update and
//     resends it until the master acknowledges it (agent/master.go).
//  2. The master applies it to the task (setTask) and, in the same step,
//     appends a copy with a new UUID to the task's Pending list
//     (queueUpdate). The task record (state and Pending) is written to the
//     registry in one batch, and only once that batch is durable does the
//     master acknowledge the agent (gateway.go's ackLoop). From then on the
//     update lives in the master's registry, so a master restart or an
//     agent restart (the agent has forgotten it) loses nothing.
//  3. The master sends each task's first pending update to the framework,
//     on every subscription and again every --status-update-retry until
//     the framework acknowledges that UUID; the acknowledgement removes it
//     (durably) and the next one is sent. So a task's updates reach the
//     framework in order, at least once, across re-subscriptions.
//
// Mesos keeps step 3's copy on the agent and forwards the framework's
// acknowledgement there; gearbox keeps it in the master's registry
// instead: one hop fewer, and the update survives an agent that is
// unreachable while the framework is away.

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/master/allocator"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// FrameworkACL is one [[frameworks]] entry of the master's config (Mesos's
// register_frameworks ACL): the certificate name principal may register
// frameworks in these roles ("*" in Roles: any role).
type FrameworkACL struct {
	Principal string   `toml:"principal"`
	Roles     []string `toml:"roles"`
}

// frameworkEntry is a framework in memory: its registry record, its
// stream while connected, and what only lives in memory (filters, when
// each task's pending update was last sent).
type frameworkEntry struct {
	store.Framework
	conn *fwConn
	// disconnectedAt starts the failover clock; zero while connected.
	disconnectedAt time.Time
	// sent: task ID → when its first pending update was last sent.
	sent map[string]time.Time
}

func (f *frameworkEntry) suppressed(role string) bool {
	return slices.Contains(f.SuppressedRoles, role)
}

// fwConn is a framework's stream: events queue here and one goroutine
// sends them.
type fwConn struct {
	out    chan *schedulerv1.Event
	done   chan struct{}
	once   sync.Once
	mu     sync.Mutex
	reason error
}

func newFwConn() *fwConn {
	return &fwConn{out: make(chan *schedulerv1.Event, 4096), done: make(chan struct{})}
}

// send queues an event without waiting (callers hold m.mu); a framework
// that does not read its stream is disconnected, and gets its pending
// updates and offers again when it subscribes again.
func (c *fwConn) send(ev *schedulerv1.Event) {
	select {
	case c.out <- ev:
	case <-c.done:
	default:
		c.close(status.Error(codes.Unavailable, "the framework does not read its stream: subscribe again"))
	}
}

func (c *fwConn) close(err error) {
	c.once.Do(func() {
		c.mu.Lock()
		c.reason = err
		c.mu.Unlock()
		close(c.done)
	})
}

func (c *fwConn) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason
}

func newID(prefix string) string {
	var b [8]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// checkRole: Mesos's role names (allocator.ValidateRole).
func checkRole(r string) error {
	if err := allocator.ValidateRole(r); err != nil {
		return status.Errorf(codes.InvalidArgument, "role %q: %v", r, err)
	}
	return nil
}

// checkFrameworkInfo checks what a framework says about itself and fills
// in the defaults.
func checkFrameworkInfo(fi *schedulerv1.FrameworkInfo) error {
	if fi == nil {
		return status.Error(codes.InvalidArgument, "subscribe: framework_info is missing")
	}
	if fi.GetName() == "" {
		return status.Error(codes.InvalidArgument, "framework_info.name is empty: name the framework")
	}
	if len(fi.GetRoles()) == 0 {
		fi.Roles = []string{"*"}
	}
	for _, r := range fi.GetRoles() {
		if err := checkRole(r); err != nil {
			return status.Errorf(codes.InvalidArgument, "framework_info.roles: %v", status.Convert(err).Message())
		}
	}
	if ft := fi.GetFailoverTimeout(); ft != nil && (ft.CheckValid() != nil || ft.AsDuration() < 0) {
		return status.Error(codes.InvalidArgument, "framework_info.failover_timeout: give a non-negative duration")
	}
	return nil
}

// mayRegister is the register_frameworks ACL: principal is the
// certificate's name ("" over the unix socket as root, or --insecure
// plaintext, which may register any role).
func (m *Master) mayRegister(principal string, authenticated bool, roles []string) error {
	if !authenticated || len(m.cfg.Frameworks) == 0 {
		return nil
	}
	for _, role := range roles {
		ok := false
		for _, acl := range m.cfg.Frameworks {
			if acl.Principal == principal && (slices.Contains(acl.Roles, role) || slices.Contains(acl.Roles, "*")) {
				ok = true
				break
			}
		}
		if !ok {
			return status.Errorf(codes.PermissionDenied, "certificate %q may not register a framework in role %q: the master's [[frameworks]] entries (principal, roles) say who may", principal, role)
		}
	}
	return nil
}

// addFramework registers a new framework, or updates a returning one's
// record (re-subscription). It does not connect it yet (connectFramework
// does, once the record is durable). Callers hold m.mu.
func (m *Master) addFramework(fi *schedulerv1.FrameworkInfo, principal string) (*frameworkEntry, uint64, error) {
	f := m.frameworks[fi.GetId()]
	if fi.GetId() != "" {
		switch {
		case f == nil:
			return nil, 0, status.Errorf(codes.NotFound, "framework %s is not registered: it was torn down or did not fail over within its failover_timeout; subscribe without an ID to register anew", fi.GetId())
		case f.Principal != principal:
			return nil, 0, status.Errorf(codes.PermissionDenied, "framework %s was registered by %q; this certificate is %q", f.ID, f.Principal, principal)
		}
	} else {
		f = &frameworkEntry{Framework: store.Framework{ID: newID("fw-"), RegisteredAt: time.Now().UTC(), Principal: principal},
			disconnectedAt: time.Now(), sent: map[string]time.Time{}}
		m.frameworks[f.ID] = f
		m.applyFrameworkInfo(f, fi)
		if err := m.alloc.AddFramework(allocator.FrameworkID(f.ID), allocFramework(f), nil, false); err != nil {
			delete(m.frameworks, f.ID)
			return nil, 0, status.Errorf(codes.InvalidArgument, "framework_info: %v", err)
		}
		return f, m.p.markFramework(f.ID), nil
	}
	m.applyFrameworkInfo(f, fi)
	return f, m.p.markFramework(f.ID), nil
}

// applyFrameworkInfo takes what a framework may change of itself.
func (m *Master) applyFrameworkInfo(f *frameworkEntry, fi *schedulerv1.FrameworkInfo) {
	f.Name, f.User, f.Roles = fi.GetName(), fi.GetUser(), slices.Clone(fi.GetRoles())
	f.FailoverTimeout = fi.GetFailoverTimeout().AsDuration()
	f.PartitionAware = slices.Contains(fi.GetCapabilities(), schedulerv1.FrameworkInfo_PARTITION_AWARE)
	f.TaskKillingState = slices.Contains(fi.GetCapabilities(), schedulerv1.FrameworkInfo_TASK_KILLING_STATE)
	f.SuppressedRoles = slices.DeleteFunc(f.SuppressedRoles, func(r string) bool { return !slices.Contains(f.Roles, r) })
	for _, o := range m.frameworkOffers(f.ID) {
		if !slices.Contains(f.Roles, o.role) {
			m.rescind(o)
		}
	}
	// Unknown to the allocator only while addFramework adds it.
	m.alloc.UpdateFramework(allocator.FrameworkID(f.ID), allocFramework(f))
}

// connectFramework makes c the framework's stream: SUBSCRIBED, then every
// task's first pending update, then offers. Callers hold m.mu.
func (m *Master) connectFramework(f *frameworkEntry, c *fwConn, added bool) {
	if f.conn != nil && f.conn != c {
		f.conn.close(status.Error(codes.Aborted, "replaced by a newer subscription of the same framework"))
	}
	f.conn, f.disconnectedAt = c, time.Time{}
	m.alloc.ActivateFramework(allocator.FrameworkID(f.ID))
	c.send(&schedulerv1.Event{Event: &schedulerv1.Event_Subscribed_{Subscribed: &schedulerv1.Event_Subscribed{
		FrameworkId: f.ID, HeartbeatInterval: durationpb.New(m.cfg.FrameworkHeartbeat)}}})
	clear(f.sent)
	for _, t := range m.frameworkTasks(f.ID) {
		if len(t.Pending) > 0 {
			m.sendHead(f, t)
		}
	}
	typ := masterv1.Event_FRAMEWORK_UPDATED
	if added {
		typ = masterv1.Event_FRAMEWORK_ADDED
	}
	m.ev.publish(&masterv1.Event{Type: typ, Framework: m.frameworkToProto(f)})
	m.log.Info("framework subscribed", "framework_id", f.ID, "name", f.Name, "roles", f.Roles, "principal", f.Principal, "new", added)
	m.wakeAllocator()
}

// disconnectFramework: the framework's stream c ended. Its offers are
// rescinded and its failover clock starts. Callers hold m.mu.
func (m *Master) disconnectFramework(f *frameworkEntry, c *fwConn) {
	if f.conn != c || m.frameworks[f.ID] != f {
		return
	}
	f.conn, f.disconnectedAt = nil, time.Now()
	for _, o := range m.frameworkOffers(f.ID) {
		m.rescind(o)
	}
	m.alloc.DeactivateFramework(allocator.FrameworkID(f.ID))
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_FRAMEWORK_UPDATED, Framework: m.frameworkToProto(f)})
	m.log.Info("framework disconnected", "framework_id", f.ID, "failover_timeout", f.FailoverTimeout)
}

// removeFramework removes a framework for good (teardown, or no failover
// in time): its offers are rescinded, its tasks killed and its pending
// updates dropped. Callers hold m.mu. It returns the generation to wait
// for.
func (m *Master) removeFramework(f *frameworkEntry, why string) uint64 {
	for _, o := range m.frameworkOffers(f.ID) {
		m.rescind(o)
	}
	for _, t := range m.frameworkTasks(f.ID) {
		t.Pending = nil
		if !terminal(t.State) {
			t.KillRequested = true
			if t.State == typesv1.TaskState_TASK_STAGING || t.State == typesv1.TaskState_TASK_LOST || t.State == typesv1.TaskState_TASK_UNREACHABLE {
				t.Message = "its framework was removed: " + why
			}
			if a := m.agents[t.AgentID]; a != nil && a.State == store.AgentActive && a.conn != nil {
				a.conn.send(killMsg(t.ID, 0))
			}
		}
		m.p.markTask(t.ID)
	}
	if f.conn != nil {
		f.conn.send(&schedulerv1.Event{Event: &schedulerv1.Event_Error_{Error: &schedulerv1.Event_Error{Message: "framework removed: " + why}}})
		f.conn.close(status.Errorf(codes.FailedPrecondition, "framework %s removed: %s", f.ID, why))
		f.conn = nil
	}
	delete(m.frameworks, f.ID)
	m.alloc.RemoveFramework(allocator.FrameworkID(f.ID))
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_FRAMEWORK_REMOVED, Framework: m.frameworkToProto(f)})
	m.log.Warn("framework removed", "framework_id", f.ID, "name", f.Name, "why", why)
	m.wakeAllocator()
	return m.p.markFramework(f.ID)
}

// frameworkTasks returns a framework's tasks. Callers hold m.mu.
func (m *Master) frameworkTasks(id string) []*store.Task {
	var out []*store.Task
	for tid := range m.byFramework[id] {
		if t, ok := m.tasks[tid]; ok {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// partitionStates are what a framework without PARTITION_AWARE sees as
// TASK_LOST (Mesos).
var partitionStates = map[typesv1.TaskState]bool{
	typesv1.TaskState_TASK_UNREACHABLE: true, typesv1.TaskState_TASK_GONE: true, typesv1.TaskState_TASK_GONE_BY_OPERATOR: true,
	typesv1.TaskState_TASK_DROPPED: true, typesv1.TaskState_TASK_UNKNOWN: true,
}

// frameworkState is how a framework sees state, by its capabilities; ok
// is false for a state it does not see at all (TASK_KILLING without
// TASK_KILLING_STATE).
func frameworkState(f *frameworkEntry, state typesv1.TaskState) (typesv1.TaskState, bool) {
	switch {
	case !f.PartitionAware && partitionStates[state]:
		return typesv1.TaskState_TASK_LOST, true
	case state == typesv1.TaskState_TASK_KILLING && !f.TaskKillingState:
		return state, false
	}
	return state, true
}

// queueUpdate appends the task's new state to its pending updates for its
// framework (written with the task), and sends it when nothing earlier is
// pending. Callers hold m.mu.
func (m *Master) queueUpdate(t *store.Task) {
	f := m.frameworks[t.FrameworkID]
	if f == nil {
		return
	}
	state, ok := frameworkState(f, t.State)
	if !ok {
		return
	}
	t.Pending = append(t.Pending, store.Update{UUID: newID(""), State: state, Reason: t.Reason, Message: t.Message,
		ExitCode: t.ExitCode, Timestamp: t.UpdatedAt})
	if len(t.Pending) == 1 {
		m.sendHead(f, t)
	}
}

// sendHead sends a task's first pending update if the framework is
// connected. Callers hold m.mu.
func (m *Master) sendHead(f *frameworkEntry, t *store.Task) {
	if f.conn == nil || len(t.Pending) == 0 {
		return
	}
	u := t.Pending[0]
	f.conn.send(updateEvent(&schedulerv1.TaskStatus{TaskId: t.ID, AgentId: t.AgentID, State: u.State, Reason: u.Reason,
		Message: u.Message, ExitCode: u.ExitCode, Timestamp: ts(u.Timestamp), Uuid: u.UUID, Source: schedulerv1.TaskStatus_SOURCE_AGENT}))
	f.sent[t.ID] = time.Now()
}

func updateEvent(s *schedulerv1.TaskStatus) *schedulerv1.Event {
	return &schedulerv1.Event{Event: &schedulerv1.Event_Update_{Update: &schedulerv1.Event_Update{Status: s}}}
}

// acknowledge removes a task's first pending update once the framework
// acknowledged its UUID, and sends the next. An acknowledgement of an
// update that is not the first pending one (a duplicate) changes nothing.
// Callers hold m.mu.
func (m *Master) acknowledge(f *frameworkEntry, ack *schedulerv1.Call_Acknowledge) error {
	t := m.tasks[ack.GetTaskId()]
	if t == nil || t.FrameworkID != f.ID {
		return fmt.Errorf("acknowledge: framework %s has no task %q", f.ID, ack.GetTaskId())
	}
	if len(t.Pending) == 0 || t.Pending[0].UUID != ack.GetUuid() {
		m.log.Debug("acknowledgement of an update not pending (a duplicate)", "task_id", t.ID, "uuid", ack.GetUuid())
		return nil
	}
	t.Pending = t.Pending[1:]
	if len(t.Pending) == 0 {
		t.Pending = nil
	}
	delete(f.sent, t.ID)
	m.p.markTask(t.ID)
	m.sendHead(f, t)
	return nil
}

// frameworkTick removes frameworks whose failover timeout passed and
// resends pending updates not acknowledged within --status-update-retry.
// Callers hold m.mu.
func (m *Master) frameworkTick(now time.Time) {
	for _, f := range m.frameworks {
		if f.conn == nil {
			if now.Sub(f.disconnectedAt) >= f.FailoverTimeout {
				m.removeFramework(f, fmt.Sprintf("it did not subscribe again within its failover_timeout (%s)", f.FailoverTimeout))
			}
			continue
		}
		for tid, at := range f.sent {
			if now.Sub(at) >= m.cfg.StatusUpdateRetry {
				if t := m.tasks[tid]; t != nil {
					m.sendHead(f, t)
				}
			}
		}
	}
}

func (m *Master) frameworkToProto(f *frameworkEntry) *masterv1.Framework {
	out := &masterv1.Framework{Id: f.ID, Name: f.Name, User: f.User, Roles: f.Roles, Principal: f.Principal,
		FailoverTimeout: durationpb.New(f.FailoverTimeout), PartitionAware: f.PartitionAware, TaskKillingState: f.TaskKillingState,
		Connected: f.conn != nil, RegisteredAt: ts(f.RegisteredAt), SuppressedRoles: f.SuppressedRoles}
	if f.conn == nil && !f.disconnectedAt.IsZero() {
		out.FailoverDeadline = timestamppb.New(f.disconnectedAt.Add(f.FailoverTimeout))
	}
	var used, offered store.Resources
	for _, t := range m.frameworkTasks(f.ID) {
		if !terminal(t.State) {
			out.ActiveTasks++
			used = addRes(used, t.Resources)
		}
		out.PendingUpdates += int32(len(t.Pending))
	}
	for _, o := range m.frameworkOffers(f.ID) {
		offered = addRes(offered, o.res)
	}
	out.Used, out.Offered = resToProto(used), resToProto(offered)
	return out
}

func addRes(a, b store.Resources) store.Resources {
	return store.Resources{CPUs: a.CPUs + b.CPUs, Memory: a.Memory + b.Memory, Disk: a.Disk + b.Disk}
}

func subRes(a, b store.Resources) store.Resources {
	return store.Resources{CPUs: a.CPUs - b.CPUs, Memory: a.Memory - b.Memory, Disk: a.Disk - b.Disk}
}

// fits says whether want fits in have.
func fits(want, have store.Resources) bool {
	return want.CPUs <= have.CPUs+1e-9 && want.Memory <= have.Memory && want.Disk <= have.Disk
}

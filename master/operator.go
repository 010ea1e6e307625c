package master

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

type operator struct {
	masterv1.UnimplementedOperatorServer
	m *Master
}

// checkTaskID: a task's ID is its container's ID on the agent, without a
// dot (a dot names a nested container there).
func checkTaskID(id string) error {
	if err := ids.Validate(id); err != nil {
		return status.Errorf(codes.InvalidArgument, "task ID: %v", err)
	}
	if strings.Contains(id, ".") {
		return status.Errorf(codes.InvalidArgument, "task ID %q: a dot is not allowed in a task ID (it names nested containers on agents)", id)
	}
	return nil
}

func (o *operator) GetHealth(context.Context, *masterv1.GetHealthRequest) (*masterv1.GetHealthResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &masterv1.GetHealthResponse{Healthy: true, Version: versionString(), StartedAt: timestamppb.New(m.startedAt)}
	for _, a := range m.agents {
		switch a.State {
		case store.AgentActive:
			out.AgentsActive++
		case store.AgentUnreachable:
			out.AgentsUnreachable++
		}
	}
	if m.ha != nil {
		m.ha.health(out)
	} else {
		out.Leader, out.LeaderAddress = true, m.advertised()
	}
	return out, nil
}

// GetMasters lists the masters: from etcd when replicated, else this one,
// the leader.
func (o *operator) GetMasters(ctx context.Context, _ *masterv1.GetMastersRequest) (*masterv1.GetMastersResponse, error) {
	m := o.m
	if m.ha != nil {
		return m.ha.getMasters(ctx)
	}
	return &masterv1.GetMastersResponse{Masters: []*masterv1.MasterInfo{{Address: m.advertised(), Version: versionString(), Leader: true,
		ElectedAt: timestamppb.New(m.startedAt)}}}, nil
}

// advertised is the address others reach this master at.
func (m *Master) advertised() string {
	if m.cfg.Advertise != "" {
		return m.cfg.Advertise
	}
	return m.Addr()
}

func (o *operator) GetState(context.Context, *masterv1.GetStateRequest) (*masterv1.GetStateResponse, error) {
	o.m.mu.Lock()
	defer o.m.mu.Unlock()
	return o.m.stateLocked(), nil
}

func (o *operator) GetAgents(context.Context, *masterv1.GetAgentsRequest) (*masterv1.GetAgentsResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &masterv1.GetAgentsResponse{}
	for _, a := range m.sortedAgents() {
		out.Agents = append(out.Agents, m.agentToProto(a))
	}
	return out, nil
}

func (o *operator) GetTasks(_ context.Context, req *masterv1.GetTasksRequest) (*masterv1.GetTasksResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if id := req.GetAgentId(); id != "" && m.agents[id] == nil {
		return nil, status.Errorf(codes.NotFound, "no agent %q: gearbox agents lists them", id)
	}
	out := &masterv1.GetTasksResponse{}
	for _, t := range m.sortedTasks(req.GetAgentId()) {
		out.Tasks = append(out.Tasks, taskToProto(t))
	}
	return out, nil
}

// ParseConstraint reads "key:value".
func ParseConstraint(s string) (string, string, error) {
	k, v, ok := strings.Cut(s, ":")
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	if !ok || k == "" || v == "" || strings.Contains(v, ":") {
		return "", "", fmt.Errorf("constraint %q: write ATTRIBUTE:VALUE, e.g. rack:r1", s)
	}
	return k, v, nil
}

func (o *operator) LaunchTask(ctx context.Context, req *masterv1.LaunchTaskRequest) (*masterv1.LaunchTaskResponse, error) {
	m := o.m
	if err := checkTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	if err := checkResources(req.GetResources()); err != nil {
		return nil, err
	}
	spec, err := taskSpec(req)
	if err != nil {
		return nil, err
	}
	want := resFromProto(req.GetResources())
	want.CPUs, want.Memory = spec.GetResources().GetCpus(), spec.GetResources().GetMemory()
	wantPorts, picked, err := wantedPorts(req)
	if err != nil {
		return nil, err
	}
	want.Ports = wantPorts
	cons := map[string]string{}
	for _, c := range req.GetConstraints() {
		k, v, err := ParseConstraint(c)
		if err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
		if prev, ok := cons[k]; ok && prev != v {
			return nil, status.Errorf(codes.InvalidArgument, "constraints %s:%s and %s:%s cannot both hold", k, prev, k, v)
		}
		cons[k] = v
	}
	if req.GetAgentId() != "" && len(cons) > 0 {
		return nil, status.Error(codes.InvalidArgument, "give an agent ID or constraints, not both")
	}

	m.mu.Lock()
	if old, ok := m.tasks[req.GetTaskId()]; ok {
		m.mu.Unlock()
		return nil, status.Errorf(codes.AlreadyExists, "task %q exists (%s on agent %s): task IDs are never reused, pick another", old.ID, old.State, old.AgentID)
	}
	a, err := m.place(req.GetAgentId(), cons, want, picked)
	if err != nil {
		m.mu.Unlock()
		return nil, err
	}
	now := time.Now().UTC()
	t := &store.Task{ID: req.GetTaskId(), AgentID: a.ID, Image: spec.GetImage(), Command: spec.GetCmd().GetValues(),
		Resources: want, PartitionAware: req.PartitionAware == nil || req.GetPartitionAware(),
		State: typesv1.TaskState_TASK_STAGING, CreatedAt: now, UpdatedAt: now, Container: &store.Container{Spec: spec}}
	if err := m.claim(t); err != nil {
		m.mu.Unlock()
		return nil, status.Errorf(codes.ResourceExhausted, "agent %s cannot hold %s: %v", a.ID, fmtWant(want), err)
	}
	m.tasks[t.ID] = t
	m.index(t)
	g := m.p.markTask(t.ID)
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_TASK_ADDED, Task: taskToProto(t)})
	m.mu.Unlock()
	// Durable before the agent hears of it: a task that runs is never
	// unknown to a restarted master.
	if err := m.p.wait(ctx, g); err != nil {
		m.mu.Lock()
		m.setTask(t, typesv1.TaskState_TASK_ERROR, typesv1.Reason_REASON_UNSPECIFIED, fmt.Sprintf("the registry could not record the task, so it was not sent to an agent: %v", err), nil)
		if errors.Is(err, store.ErrUnavailable) {
			// Refused (etcd without quorum): no trace, and the ID may be
			// used again once the registry can be written.
			m.forgetTask(t)
		}
		m.mu.Unlock()
		return nil, status.Errorf(codes.Unavailable, "the registry could not record task %s: %v", t.ID, err)
	}
	// Sent on the agent's stream of now: it may have reconnected while the
	// registry was written.
	m.mu.Lock()
	if cur := m.agents[a.ID]; cur != nil && cur.conn != nil && t.State == typesv1.TaskState_TASK_STAGING {
		cur.conn.send(&masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Launch{Launch: &masterv1.LaunchTask{Task: taskToAgent(t)}}})
	}
	pt := taskToProto(t)
	m.mu.Unlock()
	m.log.Info("task placed", "task_id", t.ID, "agent_id", a.ID, "image", t.Image)
	return &masterv1.LaunchTaskResponse{Task: pt}, nil
}

// place chooses an agent: the named one, or among active, connected agents
// that meet the constraints, the one with most CPUs free. It says why none
// fits, with each candidate's numbers. Callers hold m.mu.
func (m *Master) place(agentID string, cons map[string]string, want store.Resources, picked int) (*agentEntry, error) {
	var candidates []*agentEntry
	if agentID != "" {
		a := m.agents[agentID]
		switch {
		case a == nil:
			return nil, status.Errorf(codes.NotFound, "no agent %q: gearbox agents lists them", agentID)
		case a.State != store.AgentActive:
			return nil, status.Errorf(codes.FailedPrecondition, "agent %s is %s: launch on an active agent", agentID, a.State)
		case a.conn == nil:
			return nil, status.Errorf(codes.Unavailable, "agent %s is not connected right now: retry, or launch elsewhere", agentID)
		}
		candidates = []*agentEntry{a}
	} else {
		for _, a := range m.agents { // order does not matter: ties go to the lowest ID below
			if a.State != store.AgentActive || a.conn == nil {
				continue
			}
			match := true
			for k, v := range cons {
				if a.Attributes[k] != v {
					match = false
					break
				}
			}
			if match {
				candidates = append(candidates, a)
			}
		}
		if len(candidates) == 0 {
			if len(cons) > 0 {
				return nil, status.Errorf(codes.FailedPrecondition, "no active agent has attributes %s", fmtCons(cons))
			}
			return nil, status.Error(codes.FailedPrecondition, "no active agent is connected: start one with gearbox agent --master")
		}
	}
	var best *agentEntry
	var bestFree store.Resources
	var why []string
	// Outstanding offers count as used: an operator's task and a
	// framework's never share an agent's resources. When only offered
	// resources stand in the way, the offers of the best agent are
	// rescinded (as Mesos's allocator does for a quota or an inverse offer).
	var reclaim *agentEntry
	for _, a := range candidates {
		u := m.used(a.ID)
		free := store.Resources{CPUs: a.Resources.CPUs - u.CPUs, Memory: a.Resources.Memory - u.Memory, Disk: a.Resources.Disk - u.Disk}
		if reclaim == nil && fits(want, free) && !fits(want, subRes(free, m.offeredOn(a.ID))) {
			reclaim = a
		}
		free = subRes(free, m.offeredOn(a.ID))
		if want.CPUs > free.CPUs+1e-9 || want.Memory > free.Memory || want.Disk > free.Disk {
			why = append(why, fmt.Sprintf("%s (%s) has %s free of %s", a.ID, a.Hostname, fmtRes(free), fmtRes(a.Resources)))
			continue
		}
		if misfit, code := m.portsMisfit(a, want.Ports, picked); misfit != "" {
			if agentID != "" {
				return nil, status.Errorf(code, "agent %s (%s): %s: map another host port, or give only the container port", a.ID, a.Hostname, misfit)
			}
			why = append(why, fmt.Sprintf("%s (%s): %s", a.ID, a.Hostname, misfit))
			continue
		}
		if best == nil || free.CPUs > bestFree.CPUs+1e-9 || (free.CPUs >= bestFree.CPUs-1e-9 && a.ID < best.ID) {
			best, bestFree = a, free
		}
	}
	if best == nil && reclaim != nil {
		m.rescindAgentOffers(reclaim.ID)
		return reclaim, nil
	}
	if best == nil {
		sort.Strings(why)
		if len(why) > 5 {
			why = append(why[:5], fmt.Sprintf("and %d more", len(why)-5))
		}
		return nil, status.Errorf(codes.ResourceExhausted, "no agent has %s free: %s", fmtWant(want), strings.Join(why, "; "))
	}
	return best, nil
}

func fmtRes(r store.Resources) string {
	s := fmt.Sprintf("%g cpus, %s memory", math.Max(r.CPUs, 0), units.Human(max(r.Memory, 0)))
	if r.Disk > 0 {
		s += ", " + units.Human(r.Disk) + " disk"
	}
	return s
}

// fmtWant names only what was asked.
func fmtWant(r store.Resources) string {
	var parts []string
	if r.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("%g cpus", r.CPUs))
	}
	if r.Memory > 0 {
		parts = append(parts, units.Human(r.Memory)+" memory")
	}
	if r.Disk > 0 {
		parts = append(parts, units.Human(r.Disk)+" disk")
	}
	if len(r.Ports) > 0 {
		parts = append(parts, "host ports "+fmtPorts(r.Ports))
	}
	return strings.Join(parts, ", ")
}

func fmtCons(c map[string]string) string {
	var parts []string
	for k, v := range c {
		parts = append(parts, k+":"+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func (o *operator) KillTask(ctx context.Context, req *masterv1.KillTaskRequest) (*masterv1.KillTaskResponse, error) {
	m := o.m
	if err := checkTaskID(req.GetTaskId()); err != nil {
		return nil, err
	}
	if g := req.GetGracePeriod(); g != nil && (g.CheckValid() != nil || g.AsDuration() < 0) {
		return nil, status.Error(codes.InvalidArgument, "grace period: give a non-negative duration")
	}
	m.mu.Lock()
	t, ok := m.tasks[req.GetTaskId()]
	if !ok {
		m.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "no task %q: gearbox tasks lists them", req.GetTaskId())
	}
	if terminal(t.State) {
		m.mu.Unlock()
		return nil, status.Errorf(codes.FailedPrecondition, "task %s already ended: %s", t.ID, t.State)
	}
	t.KillRequested = true
	g := m.p.markTask(t.ID)
	m.mu.Unlock()
	if err := m.p.wait(ctx, g); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the registry could not record the kill of %s: %v", t.ID, err)
	}
	// An agent that is not connected now gets the kill when it registers.
	m.mu.Lock()
	if a := m.agents[t.AgentID]; a != nil && a.State == store.AgentActive && a.conn != nil && !terminal(t.State) {
		a.conn.send(killMsgNamed(t.ID, req.GetGracePeriod()))
	}
	pt := taskToProto(t)
	m.mu.Unlock()
	return &masterv1.KillTaskResponse{Task: pt}, nil
}

func (o *operator) ReconcileTasks(_ context.Context, req *masterv1.ReconcileTasksRequest) (*masterv1.ReconcileTasksResponse, error) {
	m := o.m
	m.mu.Lock()
	defer m.mu.Unlock()
	out := &masterv1.ReconcileTasksResponse{}
	if len(req.GetTaskIds()) == 0 {
		for _, t := range m.sortedTasks("") {
			out.Tasks = append(out.Tasks, taskToProto(t))
		}
		return out, nil
	}
	for _, id := range req.GetTaskIds() {
		if t, ok := m.tasks[id]; ok {
			out.Tasks = append(out.Tasks, taskToProto(t))
			continue
		}
		out.Tasks = append(out.Tasks, &masterv1.Task{Id: id, State: typesv1.TaskState_TASK_UNKNOWN, Message: "the master has no record of this task"})
	}
	return out, nil
}

func (o *operator) MarkAgentGone(ctx context.Context, req *masterv1.MarkAgentGoneRequest) (*masterv1.MarkAgentGoneResponse, error) {
	m := o.m
	m.mu.Lock()
	a := m.agents[req.GetAgentId()]
	if a == nil {
		m.mu.Unlock()
		return nil, status.Errorf(codes.NotFound, "no agent %q: gearbox agents lists them", req.GetAgentId())
	}
	if a.GoneByOperator {
		m.mu.Unlock()
		return &masterv1.MarkAgentGoneResponse{}, nil
	}
	m.markGone(a, true)
	g := m.p.markAgent(a.ID)
	m.mu.Unlock()
	if err := m.p.wait(ctx, g); err != nil {
		return nil, status.Errorf(codes.Unavailable, "the registry could not record it: %v", err)
	}
	return &masterv1.MarkAgentGoneResponse{}, nil
}

func (o *operator) Subscribe(req *masterv1.SubscribeRequest, stream grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
	return o.m.subscribe(req, stream)
}

package master

import (
	"context"
	"fmt"
	"time"

	"github.com/distribution/reference"
	"google.golang.org/protobuf/proto"

	"github.com/gearboxd/gearbox/internal/launchspec"
	"github.com/gearboxd/gearbox/master/store"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// refusal is a task an accept did not launch, and why (Mesos's state and
// reason for it).
type refusal struct {
	taskID string
	state  typesv1.TaskState
	reason typesv1.Reason
	msg    string
}

// accept takes offers and launches the operations' tasks on their agent.
// Invalid offers (unknown, expired, rescinded, another framework's, on
// different agents) launch nothing: every task is TASK_DROPPED (TASK_LOST
// for a framework that is not partition-aware) with REASON_INVALID_OFFERS.
// An invalid task is TASK_ERROR with REASON_TASK_INVALID; a LAUNCH_GROUP
// launches all its tasks or none (REASON_TASK_GROUP_INVALID). What the
// tasks leave of the offers is refused for the accept's filters. Refusals
// are sent as updates without a uuid (nothing to acknowledge). It returns
// the tasks to send once gen is durable. Callers hold m.mu.
func (m *Master) accept(f *frameworkEntry, acc *schedulerv1.Call_Accept) (launched []*store.Task, gen uint64) {
	var groups [][]*schedulerv1.TaskInfo
	for _, op := range acc.GetOperations() {
		switch op.GetType() {
		case schedulerv1.Operation_LAUNCH:
			for _, ti := range op.GetLaunch().GetTaskInfos() {
				groups = append(groups, []*schedulerv1.TaskInfo{ti})
			}
		case schedulerv1.Operation_LAUNCH_GROUP:
			groups = append(groups, op.GetLaunchGroup().GetTaskGroup().GetTasks())
		}
	}
	agentID, have, role, err := m.takeOffers(f, acc.GetOfferIds())
	if err != nil {
		state, _ := frameworkState(f, typesv1.TaskState_TASK_DROPPED)
		for _, g := range groups {
			for _, ti := range g {
				m.refuseTask(f, refusal{ti.GetTaskId(), state, typesv1.Reason_REASON_INVALID_OFFERS, err.Error()})
			}
		}
		return nil, 0
	}
	seen := map[string]bool{}
	for _, g := range groups {
		var tasks []*store.Task
		var bad []refusal
		for _, ti := range g {
			t, r := m.checkTaskInfo(f, ti, agentID, role, seen)
			if r != nil {
				bad = append(bad, *r)
				continue
			}
			tasks = append(tasks, t)
		}
		need := store.Resources{}
		for _, t := range tasks {
			need = addRes(need, t.Resources)
		}
		if len(bad) == 0 && !fits(need, have) {
			for _, t := range tasks {
				bad = append(bad, refusal{t.ID, typesv1.TaskState_TASK_ERROR, typesv1.Reason_REASON_TASK_INVALID,
					fmt.Sprintf("the task needs %s; what is left of the accepted offers on agent %s is %s", fmtRes(need), agentID, fmtRes(have))})
			}
			tasks = nil
		}
		if len(bad) > 0 {
			m.refuseGroup(f, g, bad)
			continue
		}
		have = subRes(have, need)
		for i, t := range tasks {
			if len(g) > 1 {
				t.GroupID = tasks[0].ID
			}
			m.tasks[t.ID] = t
			m.index(t)
			gen = m.p.markTask(t.ID)
			m.ev.publish(&masterv1.Event{Type: masterv1.Event_TASK_ADDED, Task: taskToProto(t)})
			launched = append(launched, tasks[i])
		}
	}
	// What the tasks leave of the offers goes back, filtered for the
	// accept's refuse_seconds (Mesos).
	m.giveBack(f.ID, agentID, role, have, refuseFor(acc.GetFilters()))
	m.wakeAllocator()
	return launched, gen
}

// refuseGroup refuses every task of a group: the invalid ones with their
// own reason, the others because their group failed.
func (m *Master) refuseGroup(f *frameworkEntry, g []*schedulerv1.TaskInfo, bad []refusal) {
	named := map[string]bool{}
	for _, r := range bad {
		named[r.taskID] = true
		if len(g) > 1 {
			r.reason = typesv1.Reason_REASON_TASK_GROUP_INVALID
		}
		m.refuseTask(f, r)
	}
	for _, ti := range g {
		if !named[ti.GetTaskId()] {
			m.refuseTask(f, refusal{ti.GetTaskId(), typesv1.TaskState_TASK_ERROR, typesv1.Reason_REASON_TASK_GROUP_INVALID,
				"another task of its LAUNCH_GROUP is invalid: " + bad[0].msg})
		}
	}
}

func (m *Master) refuseTask(f *frameworkEntry, r refusal) {
	m.log.Info("task refused", "framework_id", f.ID, "task_id", r.taskID, "state", r.state, "reason", r.reason, "why", r.msg)
	if f.conn != nil {
		f.conn.send(updateEvent(&schedulerv1.TaskStatus{TaskId: r.taskID, State: r.state, Reason: r.reason, Message: r.msg,
			Source: schedulerv1.TaskStatus_SOURCE_MASTER, Timestamp: ts(time.Now())}))
	}
}

// takeOffers removes the accepted offers and returns their agent, their
// resources together and their role; all must be this framework's, on one
// agent, in one role.
func (m *Master) takeOffers(f *frameworkEntry, ids []*schedulerv1.OfferID) (string, store.Resources, string, error) {
	var agentID, role string
	var have store.Resources
	if len(ids) == 0 {
		return "", have, "", fmt.Errorf("accept names no offer")
	}
	var offers []*offer
	for _, id := range ids {
		o := m.offers[id.GetValue()]
		switch {
		case o == nil:
			return "", have, "", fmt.Errorf("offer %q is not outstanding: it is unknown, was rescinded, expired (--offer-timeout) or used", id.GetValue())
		case o.frameworkID != f.ID:
			return "", have, "", fmt.Errorf("offer %q was made to another framework", id.GetValue())
		case agentID != "" && o.agentID != agentID:
			return "", have, "", fmt.Errorf("offers %q and %q are of different agents: one accept takes offers of one agent", ids[0].GetValue(), id.GetValue())
		case role != "" && o.role != role:
			return "", have, "", fmt.Errorf("offers %q and %q are in different roles", ids[0].GetValue(), id.GetValue())
		}
		agentID, role = o.agentID, o.role
		have = addRes(have, o.res)
		offers = append(offers, o)
	}
	for _, o := range offers {
		m.dropOffer(o)
	}
	return agentID, have, role, nil
}

// checkTaskInfo makes a task of a TaskInfo, or says why not.
func (m *Master) checkTaskInfo(f *frameworkEntry, ti *schedulerv1.TaskInfo, agentID, role string, seen map[string]bool) (*store.Task, *refusal) {
	bad := func(format string, a ...any) *refusal {
		return &refusal{ti.GetTaskId(), typesv1.TaskState_TASK_ERROR, typesv1.Reason_REASON_TASK_INVALID, fmt.Sprintf(format, a...)}
	}
	if err := checkTaskID(ti.GetTaskId()); err != nil {
		return nil, bad("%s", err)
	}
	if old, ok := m.tasks[ti.GetTaskId()]; ok || seen[ti.GetTaskId()] {
		if ok {
			return nil, bad("task ID %q is taken (by a task of framework %q on agent %s): task IDs are never reused", ti.GetTaskId(), old.FrameworkID, old.AgentID)
		}
		return nil, bad("task ID %q is given twice in one accept", ti.GetTaskId())
	}
	seen[ti.GetTaskId()] = true
	if ti.GetAgentId() != "" && ti.GetAgentId() != agentID {
		return nil, bad("task names agent %s; the offers are of agent %s", ti.GetAgentId(), agentID)
	}
	if err := checkResources(ti.GetResources()); err != nil {
		return nil, bad("%s", err)
	}
	c := ti.GetContainer()
	if c.GetImage() == "" {
		return nil, bad("container.image is empty: name the image the task runs")
	}
	if _, err := reference.ParseNormalizedNamed(c.GetImage()); err != nil {
		return nil, bad("container.image %q: %v", c.GetImage(), err)
	}
	spec, err := containerSpec(c, ti.GetTaskId())
	if err != nil {
		return nil, bad("container: %v", err)
	}
	now := time.Now().UTC()
	return &store.Task{ID: ti.GetTaskId(), AgentID: agentID, Image: c.GetImage(), Command: c.GetCmd().GetValues(),
		Resources: resFromProto(ti.GetResources()), PartitionAware: f.PartitionAware, State: typesv1.TaskState_TASK_STAGING,
		CreatedAt: now, UpdatedAt: now, FrameworkID: f.ID, Role: role, Container: spec}, nil
}

// containerBytes is the container spec as the registry keeps it, with the
// task's ID as its container ID.
func containerSpec(c *agentv1.LaunchContainerRequest, taskID string) (*store.Container, error) {
	if c.GetContainerId() != "" && c.GetContainerId() != taskID {
		return nil, fmt.Errorf("container_id %q differs from the task ID %q: leave it empty", c.GetContainerId(), taskID)
	}
	spec := proto.Clone(c).(*agentv1.LaunchContainerRequest)
	spec.ContainerId = taskID
	if err := launchspec.Validate(spec); err != nil {
		return nil, err
	}
	return &store.Container{Spec: spec}, nil
}

// sendLaunches tells the tasks' agents to launch them, once the registry
// has them (a task that runs is never unknown to a restarted master). One
// accept may launch more tasks than an agent's queue holds: the launches
// wait for room there (outside the master's lock) rather than overflow it.
func (m *Master) sendLaunches(ctx context.Context, tasks []*store.Task, gen uint64) {
	if len(tasks) == 0 {
		return
	}
	err := m.p.wait(ctx, gen)
	type launch struct {
		c   *agentConn
		msg *masterv1.MasterMessage
	}
	var out []launch
	m.mu.Lock()
	for _, t := range tasks {
		if err != nil {
			m.setTask(t, typesv1.TaskState_TASK_ERROR, typesv1.Reason_REASON_UNSPECIFIED, fmt.Sprintf("the registry could not record the task, so it was not sent to an agent: %v", err), nil)
			continue
		}
		if a := m.agents[t.AgentID]; a != nil && a.conn != nil && t.State == typesv1.TaskState_TASK_STAGING && !t.KillRequested {
			out = append(out, launch{a.conn, &masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Launch{Launch: &masterv1.LaunchTask{Task: taskToAgent(t)}}}})
		}
	}
	m.mu.Unlock()
	for _, l := range out {
		l.c.sendWait(l.msg)
	}
}

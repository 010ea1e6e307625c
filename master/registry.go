package master

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// agentEntry is an agent in memory: its registry record, its stream when
// connected, and when it was last heard from.
type agentEntry struct {
	store.Agent
	conn     *agentConn
	lastBeat atomic.Int64 // unix nanoseconds
	// queued: missed its pings and waits in the removal queue.
	queued bool
}

// terminal says whether no further state can follow. Unlike Mesos (and
// TaskState.Terminal), TASK_LOST is not final here: its agent may
// register again and report the task running.
func terminal(state typesv1.TaskState) bool {
	return state != typesv1.TaskState_TASK_LOST && state.Terminal()
}

// setTask changes a task's state, marks it for the store and publishes
// TASK_UPDATED. Callers hold m.mu. It returns the generation to wait for.
func (m *Master) setTask(t *store.Task, state typesv1.TaskState, reason typesv1.Reason, message string, exit *int32) uint64 {
	return m.setTaskStatus(t, state, reason, message, exit, false)
}

// setTaskStatus is setTask; healthChanged says the task's health changed,
// which is news even when its state is not.
func (m *Master) setTaskStatus(t *store.Task, state typesv1.TaskState, reason typesv1.Reason, message string, exit *int32, healthChanged bool) uint64 {
	if t.State == state && t.Reason == reason && t.Message == message && !healthChanged {
		return m.p.markTask(t.ID)
	}
	wasTerminal := terminal(t.State)
	t.State, t.Reason, t.Message, t.UpdatedAt = state, reason, message, time.Now().UTC()
	if exit != nil {
		t.ExitCode = exit
	}
	if t.FrameworkID != "" {
		m.queueUpdate(t) // written with the task below
	}
	if terminal(state) && !wasTerminal {
		m.freed(t)
	}
	g := m.p.markTask(t.ID)
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_TASK_UPDATED, Task: taskToProto(t)})
	return g
}

// agentTasks returns an agent's tasks. Callers hold m.mu.
func (m *Master) agentTasks(id string) []*store.Task {
	var out []*store.Task
	for tid := range m.byAgent[id] {
		if t, ok := m.tasks[tid]; ok {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// used sums the resources of an agent's tasks that are not terminal.
func (m *Master) used(id string) store.Resources {
	var r store.Resources
	for _, t := range m.agentTasks(id) {
		if !terminal(t.State) {
			r.CPUs += t.Resources.CPUs
			r.Memory += t.Resources.Memory
			r.Disk += t.Resources.Disk
			r.Ports = unionPorts(r.Ports, taskPorts(t))
		}
	}
	return r
}

// markUnreachable: the agent missed its pings. Its tasks become
// TASK_UNREACHABLE (partition-aware) or TASK_LOST; a task it had not
// reported started is TASK_DROPPED. Callers hold m.mu.
func (m *Master) markUnreachable(a *agentEntry, now time.Time) {
	silent := now.Sub(time.Unix(0, a.lastBeat.Load())).Round(time.Millisecond)
	a.State, a.UnreachableAt = store.AgentUnreachable, now.UTC()
	m.p.markAgent(a.ID)
	m.agentLost(a.ID, false)
	msg := fmt.Sprintf("agent %s (%s) is unreachable: no heartbeat for %s (--agent-ping-timeout %s × --max-agent-ping-timeouts %d)",
		a.ID, a.Hostname, silent, m.cfg.AgentPingTimeout, m.cfg.MaxAgentPingTimeouts)
	for _, t := range m.agentTasks(a.ID) {
		switch {
		case terminal(t.State):
		case t.State == typesv1.TaskState_TASK_STAGING:
			m.setTask(t, typesv1.TaskState_TASK_DROPPED, typesv1.Reason_REASON_AGENT_DISCONNECTED, msg+"; the task had not started", nil)
		case t.PartitionAware:
			m.setTask(t, typesv1.TaskState_TASK_UNREACHABLE, typesv1.Reason_REASON_AGENT_DISCONNECTED, msg, nil)
		default:
			m.setTask(t, typesv1.TaskState_TASK_LOST, typesv1.Reason_REASON_AGENT_DISCONNECTED, msg, nil)
		}
	}
	if a.conn != nil {
		a.conn.close(errAborted("the master marked this agent unreachable (no heartbeat for %s): register again", silent))
		a.conn = nil
	}
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_AGENT_REMOVED, Agent: m.agentToProto(a)})
	m.log.Warn("agent unreachable", "agent_id", a.ID, "hostname", a.Hostname, "silent_for", silent)
}

// markGone removes an agent for good: by an operator, or after
// registry_max_agent_age. Callers hold m.mu.
func (m *Master) markGone(a *agentEntry, byOperator bool) {
	state, reason := typesv1.TaskState_TASK_GONE, typesv1.Reason_REASON_AGENT_REMOVED
	msg := fmt.Sprintf("agent %s (%s) was unreachable for longer than --registry-max-agent-age %s", a.ID, a.Hostname, m.cfg.RegistryMaxAgentAge)
	if byOperator {
		state = typesv1.TaskState_TASK_GONE_BY_OPERATOR
		msg = fmt.Sprintf("agent %s (%s) was marked gone by an operator", a.ID, a.Hostname)
	}
	a.State, a.GoneByOperator = store.AgentGone, byOperator
	if a.UnreachableAt.IsZero() {
		a.UnreachableAt = time.Now().UTC()
	}
	m.p.markAgent(a.ID)
	for _, t := range m.agentTasks(a.ID) {
		if !terminal(t.State) {
			m.setTask(t, state, reason, msg, nil)
		}
	}
	if a.conn != nil {
		a.conn.close(errGone(a))
		a.conn = nil
	}
	m.agentLost(a.ID, true)
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_AGENT_REMOVED, Agent: m.agentToProto(a)})
	m.log.Warn("agent gone", "agent_id", a.ID, "hostname", a.Hostname, "by_operator", byOperator)
}

// healthLoop finds agents that missed their pings and queues them for the
// removal limiter; it also retires agents unreachable for longer than
// registry_max_agent_age.
func (m *Master) healthLoop(ctx context.Context) {
	tick := min(time.Second, max(m.cfg.AgentPingTimeout/5, 20*time.Millisecond))
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		deadline := now.Add(-m.missedAfter()).UnixNano()
		m.mu.Lock()
		for _, a := range m.agents {
			switch {
			case a.State == store.AgentActive && !a.queued && a.lastBeat.Load() < deadline:
				a.queued = true
				m.removal.push(a.ID)
			case a.State == store.AgentUnreachable && now.Sub(a.UnreachableAt) > m.cfg.RegistryMaxAgentAge:
				m.markGone(a, false)
			}
		}
		m.mu.Unlock()
		m.queueGauge.Set(float64(m.removal.len()))
	}
}

// removalLoop marks queued agents unreachable, no faster than
// --agent-removal-rate-limit. An agent heard from while it waited is let go.
func (m *Master) removalLoop(ctx context.Context) {
	stillMissed := func(id string) *agentEntry {
		a := m.agents[id]
		if a == nil || a.State != store.AgentActive || a.lastBeat.Load() >= time.Now().Add(-m.missedAfter()).UnixNano() {
			if a != nil {
				a.queued = false
			}
			return nil
		}
		return a
	}
	for {
		id, ok := m.removal.pop(ctx)
		if !ok {
			return
		}
		m.mu.Lock()
		a := stillMissed(id)
		m.mu.Unlock()
		if a == nil {
			m.queueGauge.Set(float64(m.removal.len()))
			continue
		}
		if m.limiter != nil {
			if err := m.limiter.Wait(ctx); err != nil {
				return
			}
		}
		m.mu.Lock()
		if a = stillMissed(id); a != nil {
			a.queued = false
			m.markUnreachable(a, time.Now())
		}
		m.mu.Unlock()
		m.queueGauge.Set(float64(m.removal.len()))
	}
}

// removalQueue is a FIFO of agent IDs.
type removalQueue struct {
	mu   sync.Mutex
	ids  []string
	wake chan struct{}
}

func newRemovalQueue() *removalQueue { return &removalQueue{wake: make(chan struct{}, 1)} }

func (q *removalQueue) push(id string) {
	q.mu.Lock()
	q.ids = append(q.ids, id)
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *removalQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.ids)
}

func (q *removalQueue) pop(ctx context.Context) (string, bool) {
	for {
		q.mu.Lock()
		if len(q.ids) > 0 {
			id := q.ids[0]
			q.ids = q.ids[1:]
			q.mu.Unlock()
			return id, true
		}
		q.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", false
		case <-q.wake:
		}
	}
}

// ParseRate reads Mesos's rate form, N/DURATION ("1/10mins", "5/1secs",
// "1/2s"): at most N per DURATION, one at a time. "" is no limit (nil).
func ParseRate(s string) (*rate.Limiter, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	ns, ds, ok := strings.Cut(s, "/")
	n, err := strconv.Atoi(strings.TrimSpace(ns))
	if !ok || err != nil || n < 1 {
		return nil, fmt.Errorf("%q: write N/DURATION with N ≥ 1, e.g. 1/10mins or 5/1secs", s)
	}
	d, err := parseMesosDuration(strings.TrimSpace(ds))
	if err != nil || d <= 0 {
		return nil, fmt.Errorf("%q: the duration after / must be positive, e.g. 10mins, 30secs, 2s", s)
	}
	every := d / time.Duration(n)
	if every <= 0 {
		// rate.Every(0) is rate.Inf: no limit at all, the opposite of asked.
		return nil, fmt.Errorf("%q: more than one per nanosecond cannot be represented; give a longer duration or a smaller N", s)
	}
	return rate.NewLimiter(rate.Every(every), 1), nil
}

// parseMesosDuration reads Mesos's units (ns, us, ms, secs, mins, hrs,
// days, weeks) and Go's (s, m, h).
func parseMesosDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	i := strings.IndexFunc(s, func(r rune) bool { return !unicode.IsDigit(r) && r != '.' })
	if i <= 0 {
		return 0, fmt.Errorf("duration %q", s)
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, err
	}
	units := map[string]time.Duration{"ns": time.Nanosecond, "us": time.Microsecond, "ms": time.Millisecond,
		"secs": time.Second, "sec": time.Second, "mins": time.Minute, "min": time.Minute, "hrs": time.Hour, "hr": time.Hour,
		"days": 24 * time.Hour, "day": 24 * time.Hour, "weeks": 7 * 24 * time.Hour, "week": 7 * 24 * time.Hour}
	u, ok := units[s[i:]]
	if !ok {
		return 0, fmt.Errorf("unit %q", s[i:])
	}
	f := v * float64(u)
	if f >= math.MaxInt64 {
		return 0, fmt.Errorf("duration %q is too long", s)
	}
	return time.Duration(f), nil
}

// ---- conversions ----

func resToProto(r store.Resources) *masterv1.Resources {
	return &masterv1.Resources{Cpus: r.CPUs, MemoryBytes: r.Memory, DiskBytes: r.Disk, Ports: portsToProto(r.Ports)}
}

func resFromProto(r *masterv1.Resources) store.Resources {
	return store.Resources{CPUs: r.GetCpus(), Memory: r.GetMemoryBytes(), Disk: r.GetDiskBytes(), Ports: portsFromProto(r.GetPorts())}
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func taskToProto(t *store.Task) *masterv1.Task {
	return &masterv1.Task{
		Id: t.ID, AgentId: t.AgentID, Image: t.Image, Command: t.Command, Resources: resToProto(t.Resources),
		PartitionAware: t.PartitionAware,
		State:          t.State,
		Reason:         t.Reason,
		Message:        t.Message, ExitCode: t.ExitCode, KillRequested: t.KillRequested,
		CreatedAt: ts(t.CreatedAt), UpdatedAt: ts(t.UpdatedAt),
		FrameworkId: t.FrameworkID, Role: t.Role, GroupId: t.GroupID,
		Container: publicSpec(t.Container),
		Healthy:   t.Healthy, HealthOutput: t.HealthOutput,
		RestartCount: uint32(t.RestartCount), LastExit: exitToProto(t.LastExit),
		IpAddresses: t.IPAddresses, PortMappings: mappingsToProto(t.PortMappings),
	}
}

// setHealth takes what a status says of the task's health into t and says
// whether that changed. A status without it (nil) leaves t's as it is.
func setHealth(t *store.Task, st *masterv1.TaskStatus) bool {
	if st.Healthy == nil {
		return false
	}
	if t.Healthy != nil && *t.Healthy == st.GetHealthy() && t.HealthOutput == st.GetHealthOutput() {
		return false
	}
	h := st.GetHealthy()
	t.Healthy, t.HealthOutput = &h, st.GetHealthOutput()
	return true
}

func exitToProto(e *store.TaskExit) *typesv1.ProcessExit {
	if e == nil {
		return nil
	}
	return &typesv1.ProcessExit{ExitCode: e.ExitCode, State: e.State, Reason: e.Reason, Message: e.Message, Time: ts(e.Time)}
}

func exitFromProto(p *typesv1.ProcessExit) *store.TaskExit {
	if p == nil {
		return nil
	}
	e := &store.TaskExit{ExitCode: p.ExitCode, State: p.GetState(), Reason: p.GetReason(), Message: p.GetMessage()}
	if p.Time != nil {
		e.Time = p.Time.AsTime().UTC()
	}
	return e
}

var agentStates = map[store.AgentState]masterv1.AgentState{
	store.AgentActive: masterv1.AgentState_AGENT_ACTIVE, store.AgentUnreachable: masterv1.AgentState_AGENT_UNREACHABLE, store.AgentGone: masterv1.AgentState_AGENT_GONE,
}

// agentToProto; callers hold m.mu.
func (m *Master) agentToProto(a *agentEntry) *masterv1.AgentInfo {
	return &masterv1.AgentInfo{
		Id: a.ID, Hostname: a.Hostname, Address: a.Address, Version: a.Version,
		Resources: resToProto(a.Resources), Used: resToProto(m.used(a.ID)), Attributes: a.Attributes, Offered: resToProto(m.offeredOn(a.ID)),
		State: agentStates[a.State], GoneByOperator: a.GoneByOperator, Connected: a.conn != nil,
		RegisteredAt: ts(a.RegisteredAt), UnreachableAt: ts(a.UnreachableAt), LastHeartbeat: ts(time.Unix(0, a.lastBeat.Load())),
	}
}

// stateLocked is GetState's answer; callers hold m.mu.
func (m *Master) stateLocked() *masterv1.GetStateResponse {
	out := &masterv1.GetStateResponse{LastEventSeq: m.ev.lastSeq()}
	var total, used store.Resources
	for _, a := range m.sortedAgents() {
		pa := m.agentToProto(a)
		out.Agents = append(out.Agents, pa)
		if a.State == store.AgentActive {
			u := resFromProto(pa.Used)
			total.CPUs, total.Memory, total.Disk = total.CPUs+a.Resources.CPUs, total.Memory+a.Resources.Memory, total.Disk+a.Resources.Disk
			used.CPUs, used.Memory, used.Disk = used.CPUs+u.CPUs, used.Memory+u.Memory, used.Disk+u.Disk
		}
	}
	for _, t := range m.sortedTasks("") {
		out.Tasks = append(out.Tasks, taskToProto(t))
	}
	out.Total, out.Used = resToProto(total), resToProto(used)
	out.Free = resToProto(store.Resources{CPUs: math.Max(total.CPUs-used.CPUs, 0), Memory: max(total.Memory-used.Memory, 0), Disk: max(total.Disk-used.Disk, 0)})
	return out
}

func (m *Master) sortedAgents() []*agentEntry {
	out := make([]*agentEntry, 0, len(m.agents))
	for _, a := range m.agents {
		out = append(out, a)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (m *Master) sortedTasks(agentID string) []*store.Task {
	if agentID != "" {
		return m.agentTasks(agentID)
	}
	out := make([]*store.Task, 0, len(m.tasks))
	for _, t := range m.tasks {
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

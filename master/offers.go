package master

// Offers: the allocator (master/allocator, hierarchical DRF by role weight,
// then by framework inside a role) decides which framework is offered
// which agent's free resources; the master gives each offer an ID, sends
// it, and tells the allocator what comes back (Recover: declined, unused,
// rescinded, freed by a terminal task). It allocates after each change (agent added,
// resources freed, subscription, revive) and every --allocation-interval;
// offers not used within --offer-timeout are rescinded, and so are the
// offers of an agent that becomes unreachable or gone.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/gearboxd/gearbox/master/allocator"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
)

// defaultRefuse is a decline's filter without refuse_seconds (Mesos: 5 s).
const defaultRefuse = allocator.DefaultRefuse

type offer struct {
	id, frameworkID, agentID, role string
	res                            store.Resources
	at                             time.Time
}

func (m *Master) wakeAllocator() {
	select {
	case m.allocWake <- struct{}{}:
	default:
	}
}

// allocLoop allocates on every wake and every --allocation-interval, and
// on each interval also expires offers and runs the frameworks' clocks.
func (m *Master) allocLoop(ctx context.Context) {
	t := time.NewTicker(m.cfg.AllocationInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.allocWake:
		case <-t.C:
			now := time.Now()
			m.mu.Lock()
			m.frameworkTick(now)
			m.expireOffers(now)
			m.mu.Unlock()
		}
		m.mu.Lock()
		m.allocate(time.Now())
		m.mu.Unlock()
	}
}

func (m *Master) expireOffers(now time.Time) {
	if m.cfg.OfferTimeout <= 0 {
		return
	}
	for _, o := range m.offers {
		if now.Sub(o.at) >= m.cfg.OfferTimeout {
			m.rescind(o)
		}
	}
}

// offeredOn sums an agent's outstanding offers. Callers hold m.mu.
func (m *Master) offeredOn(agentID string) store.Resources {
	var r store.Resources
	for _, o := range m.offersByAgent[agentID] {
		r = addRes(r, o.res)
	}
	return r
}

func (m *Master) frameworkOffers(id string) []*offer {
	var out []*offer
	for _, o := range m.offers {
		if o.frameworkID == id {
			out = append(out, o)
		}
	}
	return out
}

// rescind withdraws an offer, telling its framework. Callers hold m.mu.
func (m *Master) rescind(o *offer) {
	m.dropOffer(o)
	m.giveBack(o.frameworkID, o.agentID, o.role, o.res, 0)
	if f := m.frameworks[o.frameworkID]; f != nil && f.conn != nil {
		f.conn.send(&schedulerv1.Event{Event: &schedulerv1.Event_Rescind_{Rescind: &schedulerv1.Event_Rescind{
			OfferId: &schedulerv1.OfferID{Value: o.id}}}})
	}
}

func (m *Master) dropOffer(o *offer) {
	delete(m.offers, o.id)
	delete(m.offersByAgent[o.agentID], o.id)
}

// rescindAgentOffers: the agent is unreachable or gone. Callers hold m.mu.
func (m *Master) rescindAgentOffers(agentID string) {
	for _, o := range m.offersByAgent[agentID] {
		m.rescind(o)
	}
}

// allocate runs the allocator and sends its offers, one OFFERS event per
// framework. Callers hold m.mu.
func (m *Master) allocate(now time.Time) {
	batches := map[string][]*schedulerv1.Offer{}
	for _, al := range m.alloc.Allocate() {
		f, a := m.frameworks[string(al.Framework)], m.agents[string(al.Agent)]
		res := fromAlloc(al.Resources)
		if f == nil || f.conn == nil || a == nil {
			m.giveBack(string(al.Framework), string(al.Agent), al.Role, res, 0)
			continue
		}
		o := &offer{id: newID("offer-"), frameworkID: f.ID, agentID: a.ID, role: al.Role, res: res, at: now}
		m.offers[o.id] = o
		if m.offersByAgent[a.ID] == nil {
			m.offersByAgent[a.ID] = map[string]*offer{}
		}
		m.offersByAgent[a.ID][o.id] = o
		batches[f.ID] = append(batches[f.ID], &schedulerv1.Offer{Id: &schedulerv1.OfferID{Value: o.id}, FrameworkId: f.ID,
			AgentId: a.ID, Hostname: a.Hostname, Attributes: a.Attributes,
			Resources: []*schedulerv1.RoleResources{{Role: al.Role, Resources: resToProto(res)}}})
	}
	for fid, offers := range batches {
		m.frameworks[fid].conn.send(&schedulerv1.Event{Event: &schedulerv1.Event_Offers_{Offers: &schedulerv1.Event_Offers{Offers: offers}}})
	}
}

// giveBack gives resources back to the allocator (declined, unused,
// rescinded, freed). An allocator that no longer holds them (a framework
// or agent removed meanwhile) is not an error worth more than a debug line.
func (m *Master) giveBack(fw, agent, role string, res store.Resources, refuse time.Duration) {
	if res.CPUs == 0 && res.Memory == 0 && res.Disk == 0 && len(res.Ports) == 0 {
		return
	}
	if err := m.alloc.Recover(allocator.FrameworkID(fw), allocator.AgentID(agent), role, toAlloc(res), refuse); err != nil {
		m.log.Debug("recovering resources", "framework_id", fw, "agent_id", agent, "role", role, "err", err)
	}
}

// toAlloc and fromAlloc carry resources, host ports included (an agent's
// ports resource is offered as Mesos offers its ports ranges).
func toAlloc(r store.Resources) allocator.Resources {
	var ports []allocator.Range
	for _, p := range r.Ports {
		ports = append(ports, allocator.Range{Begin: uint64(p.Begin), End: uint64(p.End)})
	}
	return allocator.Resources{CPUs: max(r.CPUs, 0), MemoryBytes: max(r.Memory, 0), DiskBytes: max(r.Disk, 0), Ports: allocator.NewRanges(ports...)}
}

func fromAlloc(r allocator.Resources) store.Resources {
	out := store.Resources{CPUs: r.CPUs, Memory: r.MemoryBytes, Disk: r.DiskBytes}
	for _, p := range r.Ports {
		out.Ports = append(out.Ports, store.PortRange{Begin: uint32(p.Begin), End: uint32(p.End)})
	}
	return out
}

// operatorFramework is the built-in framework the operator's task launch
// (and tasks adopted from agents) goes through: the allocator holds their
// resources as that framework's (Claim), so they and frameworks' offers
// never double-book an agent. It is never active: it gets no offers.
const operatorFramework = "gearbox-operator"

// allocFrameworkOf is the allocator's framework of a task.
func allocFrameworkOf(t *store.Task) (string, string) {
	if t.FrameworkID == "" {
		return operatorFramework, allocator.DefaultRole
	}
	return t.FrameworkID, t.Role
}

// allocAgent is an agent as the allocator sees it. Callers hold m.mu.
func (m *Master) allocAgent(a *agentEntry) allocator.AgentInfo {
	return allocator.AgentInfo{Hostname: a.Hostname, Attributes: a.Attributes, Total: toAlloc(a.Resources)}
}

// claim gives an operator's (or adopted) task's resources to the
// built-in framework on its agent, rescinding the agent's offers if
// they hold what it needs. Callers hold m.mu.
func (m *Master) claim(t *store.Task) error {
	if !m.allocAgents[t.AgentID] {
		return nil // counted when the agent is added
	}
	id, role := allocFrameworkOf(t)
	err := m.alloc.Claim(allocator.FrameworkID(id), allocator.AgentID(t.AgentID), role, toAlloc(t.Resources))
	if errors.Is(err, allocator.ErrInsufficient) {
		m.rescindAgentOffers(t.AgentID)
		err = m.alloc.Claim(allocator.FrameworkID(id), allocator.AgentID(t.AgentID), role, toAlloc(t.Resources))
	}
	return err
}

// frameworkUsed is what the framework's tasks that are not terminal hold
// (on agent, or on every agent when agent is ""). Callers hold m.mu.
func (m *Master) frameworkUsed(fw, agent string) []allocator.Allocation {
	type key struct{ fw, agent, role string }
	sum := map[key]store.Resources{}
	var tasks []*store.Task
	if agent != "" {
		tasks = m.agentTasks(agent)
	} else {
		tasks = m.frameworkTasks(fw)
	}
	for _, t := range tasks {
		if id, role := allocFrameworkOf(t); (fw == "" || t.FrameworkID == fw) && !terminal(t.State) {
			k := key{id, t.AgentID, role}
			sum[k] = addRes(sum[k], t.Resources)
		}
	}
	var out []allocator.Allocation
	for k, r := range sum {
		out = append(out, allocator.Allocation{Framework: allocator.FrameworkID(k.fw), Agent: allocator.AgentID(k.agent), Role: k.role, Resources: toAlloc(r)})
	}
	return out
}

// syncAgent tells the allocator of an agent that registered (again).
// Callers hold m.mu.
func (m *Master) syncAgent(a *agentEntry) {
	info := m.allocAgent(a)
	var err error
	switch {
	case !m.allocAgents[a.ID]:
		err = m.alloc.AddAgent(allocator.AgentID(a.ID), info, m.frameworkUsed("", a.ID))
		m.allocAgents[a.ID] = err == nil
	default:
		err = m.alloc.UpdateAgent(allocator.AgentID(a.ID), info)
	}
	if err == nil && a.State == store.AgentActive {
		err = m.alloc.ActivateAgent(allocator.AgentID(a.ID))
	}
	if err != nil {
		m.log.Warn("the allocator refused an agent; it gets no offers", "agent_id", a.ID, "err", err)
	}
	m.wakeAllocator()
}

// agentLost: unreachable (gone: removed) agents' offers are rescinded and
// they are offered no more. Callers hold m.mu.
func (m *Master) agentLost(id string, gone bool) {
	m.rescindAgentOffers(id)
	if !m.allocAgents[id] {
		return
	}
	if gone {
		m.alloc.RemoveAgent(allocator.AgentID(id))
		delete(m.allocAgents, id)
		m.sendFailure(id)
		return
	}
	m.alloc.DeactivateAgent(allocator.AgentID(id))
}

func allocFramework(f *frameworkEntry) allocator.FrameworkInfo {
	return allocator.FrameworkInfo{Roles: slices.Clone(f.Roles), SuppressedRoles: slices.Clone(f.SuppressedRoles)}
}

// decline returns offers; their agents are not offered to this framework
// again for refuse_seconds. Unknown offers are ignored (Mesos). Callers
// hold m.mu.
func (m *Master) decline(f *frameworkEntry, ids []*schedulerv1.OfferID, filters *schedulerv1.Filters) {
	refuse := refuseFor(filters)
	for _, id := range ids {
		o := m.offers[id.GetValue()]
		if o == nil || o.frameworkID != f.ID {
			continue
		}
		m.dropOffer(o)
		m.giveBack(f.ID, o.agentID, o.role, o.res, refuse)
	}
	m.wakeAllocator()
}

func refuseFor(filters *schedulerv1.Filters) time.Duration {
	if filters == nil || filters.RefuseSeconds == nil {
		return defaultRefuse
	}
	s := filters.GetRefuseSeconds()
	if math.IsNaN(s) || s <= 0 {
		return 0
	}
	return time.Duration(math.Min(s, allocator.MaxRefuse.Seconds()) * float64(time.Second))
}

// suppress stops offers in roles (none: all the framework's); revive
// resumes them and drops the framework's decline filters. Callers hold
// m.mu.
func (m *Master) suppress(f *frameworkEntry, roles []string, on bool) error {
	if len(roles) == 0 {
		roles = f.Roles
	}
	for _, r := range roles {
		found := false
		for _, fr := range f.Roles {
			found = found || fr == r
		}
		if !found {
			return fmt.Errorf("role %q is not one of framework %s's roles %v", r, f.ID, f.Roles)
		}
	}
	var keep []string
	for _, r := range f.SuppressedRoles {
		found := false
		for _, x := range roles {
			found = found || x == r
		}
		if !found {
			keep = append(keep, r)
		}
	}
	if on {
		keep = append(keep, roles...)
		sort.Strings(keep)
	}
	f.SuppressedRoles = keep
	if on {
		m.alloc.SuppressOffers(allocator.FrameworkID(f.ID), roles)
	} else {
		m.alloc.ReviveOffers(allocator.FrameworkID(f.ID), roles)
	}
	m.p.markFramework(f.ID)
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_FRAMEWORK_UPDATED, Framework: m.frameworkToProto(f)})
	if !on {
		m.wakeAllocator()
	}
	return nil
}

// freed: a task ended; its resources go back to the allocator. Callers
// hold m.mu.
func (m *Master) freed(t *store.Task) {
	id, role := allocFrameworkOf(t)
	m.giveBack(id, t.AgentID, role, t.Resources, 0)
	m.wakeAllocator()
}

func (m *Master) weightOf(role string) float64 {
	if w, ok := m.weights[role]; ok && w > 0 {
		return w
	}
	return 1
}

// sendFailure tells the frameworks with tasks on a removed agent (Mesos's
// FAILURE event). Callers hold m.mu.
func (m *Master) sendFailure(agentID string) {
	told := map[string]bool{}
	for _, t := range m.agentTasks(agentID) {
		f := m.frameworks[t.FrameworkID]
		if f == nil || f.conn == nil || told[f.ID] {
			continue
		}
		told[f.ID] = true
		f.conn.send(&schedulerv1.Event{Event: &schedulerv1.Event_Failure_{Failure: &schedulerv1.Event_Failure{AgentId: agentID}}})
	}
}

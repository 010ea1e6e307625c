package master

// Offers: the master offers each active agent's free resources (total less
// its tasks' and its outstanding offers') to one framework at a time, in
// one of its roles, choosing by hierarchical Dominant Resource Fairness:
// the role whose allocation (tasks and offers) has the lowest dominant
// share divided by its weight, then inside the role the framework with the
// lowest dominant share. It allocates after each change (agent added,
// resources freed, subscription, revive) and every --allocation-interval;
// offers not used within --offer-timeout are rescinded, and so are the
// offers of an agent that becomes unreachable or gone.

import (
	"context"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
)

// An agent with less than this free is not offered (Mesos's MIN_CPUS and
// MIN_MEM).
const (
	minOfferCPUs   = 0.01
	minOfferMemory = 32 << 20
)

// defaultRefuse is a decline's filter without refuse_seconds (Mesos: 5 s).
const defaultRefuse = 5 * time.Second

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

// shares are allocations (tasks that are not terminal, and offers) by
// role and by framework, for DRF.
type shares struct {
	total  store.Resources
	role   map[string]store.Resources
	fw     map[string]store.Resources
	weight func(string) float64
}

func dominant(r, total store.Resources) float64 {
	s := 0.0
	if total.CPUs > 0 {
		s = math.Max(s, r.CPUs/total.CPUs)
	}
	if total.Memory > 0 {
		s = math.Max(s, float64(r.Memory)/float64(total.Memory))
	}
	if total.Disk > 0 {
		s = math.Max(s, float64(r.Disk)/float64(total.Disk))
	}
	return s
}

func (m *Master) weightOf(role string) float64 {
	if w, ok := m.weights[role]; ok && w > 0 {
		return w
	}
	return 1
}

// allocate offers every active agent's free resources. Callers hold m.mu.
func (m *Master) allocate(now time.Time) {
	if len(m.frameworks) == 0 {
		return
	}
	sh := shares{role: map[string]store.Resources{}, fw: map[string]store.Resources{}, weight: m.weightOf}
	var agents []*agentEntry
	for _, a := range m.agents {
		if a.State == store.AgentActive && a.conn != nil {
			agents = append(agents, a)
			sh.total = addRes(sh.total, a.Resources)
		}
	}
	for _, t := range m.tasks {
		if t.FrameworkID != "" && !terminal(t.State) {
			sh.role[t.Role] = addRes(sh.role[t.Role], t.Resources)
			sh.fw[t.FrameworkID] = addRes(sh.fw[t.FrameworkID], t.Resources)
		}
	}
	for _, o := range m.offers {
		sh.role[o.role] = addRes(sh.role[o.role], o.res)
		sh.fw[o.frameworkID] = addRes(sh.fw[o.frameworkID], o.res)
	}
	// Agents in a random order (map order), as Mesos shuffles them, so
	// that no agent is always offered first.
	batches := map[string][]*schedulerv1.Offer{}
	for _, a := range agents {
		free := subRes(subRes(a.Resources, m.used(a.ID)), m.offeredOn(a.ID))
		if free.CPUs < minOfferCPUs || free.Memory < minOfferMemory {
			continue
		}
		f, role := m.pick(&sh, a.ID, now)
		if f == nil {
			continue
		}
		o := &offer{id: newID("offer-"), frameworkID: f.ID, agentID: a.ID, role: role, res: free, at: now}
		m.offers[o.id] = o
		if m.offersByAgent[a.ID] == nil {
			m.offersByAgent[a.ID] = map[string]*offer{}
		}
		m.offersByAgent[a.ID][o.id] = o
		sh.role[role] = addRes(sh.role[role], free)
		sh.fw[f.ID] = addRes(sh.fw[f.ID], free)
		batches[f.ID] = append(batches[f.ID], &schedulerv1.Offer{Id: &schedulerv1.OfferID{Value: o.id}, FrameworkId: f.ID,
			AgentId: a.ID, Hostname: a.Hostname, Attributes: a.Attributes,
			Resources: []*schedulerv1.RoleResources{{Role: role, Resources: resToProto(free)}}})
	}
	for fid, offers := range batches {
		m.frameworks[fid].conn.send(&schedulerv1.Event{Event: &schedulerv1.Event_Offers_{Offers: &schedulerv1.Event_Offers{Offers: offers}}})
	}
}

// pick chooses the framework and role an agent's resources go to: DRF
// between roles by weight, then between the role's frameworks. Callers
// hold m.mu.
func (m *Master) pick(sh *shares, agentID string, now time.Time) (*frameworkEntry, string) {
	var best *frameworkEntry
	var bestRole string
	var bestRoleShare, bestFwShare float64
	for _, f := range m.frameworks {
		if f.conn == nil || now.Before(f.refused[agentID]) {
			continue
		}
		fs := dominant(sh.fw[f.ID], sh.total)
		for _, role := range f.Roles {
			if f.suppressed(role) {
				continue
			}
			rs := dominant(sh.role[role], sh.total) / sh.weight(role)
			better := best == nil || rs < bestRoleShare-1e-12 ||
				(math.Abs(rs-bestRoleShare) <= 1e-12 && (fs < bestFwShare-1e-12 || (math.Abs(fs-bestFwShare) <= 1e-12 && f.ID < best.ID)))
			if better {
				best, bestRole, bestRoleShare, bestFwShare = f, role, rs, fs
			}
		}
	}
	return best, bestRole
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
		m.refuse(f, o.agentID, refuse)
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
	return time.Duration(math.Min(s, 365*24*3600) * float64(time.Second))
}

func (m *Master) refuse(f *frameworkEntry, agentID string, d time.Duration) {
	if d > 0 {
		f.refused[agentID] = time.Now().Add(d)
	}
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
	} else {
		clear(f.refused)
	}
	f.SuppressedRoles = keep
	m.p.markFramework(f.ID)
	m.ev.publish(&masterv1.Event{Type: masterv1.Event_FRAMEWORK_UPDATED, Framework: m.frameworkToProto(f)})
	if !on {
		m.wakeAllocator()
	}
	return nil
}

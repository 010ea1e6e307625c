package hierarchical

import (
	"cmp"
	"slices"
	"time"

	"github.com/gearboxd/gearbox/master/allocator"
)

// Allocate implements allocator.Allocator.
func (a *Allocator) Allocate() []allocator.Offer {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := time.Now()
	offers := a.allocateLocked(a.cfg.Now())
	if a.cfg.ObserveRun != nil {
		a.cfg.ObserveRun(time.Since(start))
	}
	return offers
}

func (a *Allocator) allocateLocked(now time.Time) []allocator.Offer {
	root := a.roleTree()
	if len(root.children) == 0 {
		return nil
	}
	var offers []allocator.Offer
	for _, ag := range a.sortedAgents() {
		if !ag.active {
			continue
		}
		free := ag.free()
		if !a.allocatable(free) {
			continue
		}
		if o, ok := a.offerNode(root, ag, free, now); ok {
			offers = append(offers, o)
		}
	}
	return offers
}

// offerNode offers all of ag's free resources to the first eligible
// framework under n, walking n's children in share order, and keeps every
// order on the way sorted.
func (a *Allocator) offerNode(n *node, ag *agent, free allocator.Resources, now time.Time) (allocator.Offer, bool) {
	if n.role == nil {
		for _, child := range n.children {
			if o, ok := a.offerNode(child, ag, free, now); ok {
				return o, true
			}
		}
		return allocator.Offer{}, false
	}
	r := n.role
	for ci, c := range r.order {
		if c.fw.filtered(r.name, ag.id, free, now) {
			continue
		}
		a.allocate(ag, c.fw.id, r.name, free)
		c.count++
		r.count++
		c.share = dominantShare(c.alloc, a.total)
		sink(r.order, ci)
		a.charge(n, scalarsOf(free))
		return allocator.Offer{Framework: c.fw.id, Agent: ag.id, Role: r.name, Resources: free}, true
	}
	return allocator.Offer{}, false
}

// clientOrder sorts r's eligible clients (active, subscribed, not
// suppressed) by share into r.order and reports whether there is one.
func (a *Allocator) clientOrder(r *role) bool {
	r.order = r.order[:0]
	for _, c := range r.clients {
		fw := c.fw
		if !fw.active || !fw.roles[r.name] || fw.suppressed[r.name] {
			continue
		}
		c.share = dominantShare(c.alloc, a.total)
		r.order = append(r.order, c)
	}
	slices.SortFunc(r.order, func(x, y *client) int { return boolCmp(x.less(y), y.less(x)) })
	return len(r.order) > 0
}

func boolCmp(less, greater bool) int {
	switch {
	case less:
		return -1
	case greater:
		return 1
	}
	return 0
}

func (a *Allocator) sortedAgents() []*agent {
	if a.agentOrder == nil {
		a.agentOrder = make([]*agent, 0, len(a.agents))
		for _, ag := range a.agents {
			a.agentOrder = append(a.agentOrder, ag)
		}
		slices.SortFunc(a.agentOrder, byID)
	}
	return a.agentOrder
}

func byID(x, y *agent) int { return cmp.Compare(x.id, y.id) }

// allocatable reports whether free holds at least one of the minimums.
func (a *Allocator) allocatable(free allocator.Resources) bool {
	if free.Empty() {
		return false
	}
	for _, m := range a.cfg.MinAllocatable {
		if free.Contains(m) {
			return true
		}
	}
	return false
}

// filtered reports whether a refuse filter of fw covers free on agent in
// role; expired filters are dropped on the way.
func (fw *framework) filtered(role string, agent allocator.AgentID, free allocator.Resources, now time.Time) bool {
	if len(fw.filters) == 0 {
		return false
	}
	k := filterKey{role, agent}
	fs, ok := fw.filters[k]
	if !ok {
		return false
	}
	live := fs[:0]
	hit := false
	for _, f := range fs {
		if !now.Before(f.expires) {
			continue
		}
		live = append(live, f)
		hit = hit || f.res.Contains(free)
	}
	if len(live) == 0 {
		delete(fw.filters, k)
	} else {
		fw.filters[k] = live
	}
	return hit
}

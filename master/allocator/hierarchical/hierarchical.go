// Package hierarchical is the master's allocator: hierarchical Dominant
// Resource Fairness, after Mesos's HierarchicalDRFAllocator
// (src/master/allocator/mesos/hierarchical.cpp).
//
// One allocation run walks the active agents in ID order. For each agent
// with allocatable free resources it picks the role with the lowest weighted
// dominant share (its allocation's largest fraction of the cluster's total
// cpus, memory or disk, divided by its weight), then inside the role the
// active framework with the lowest dominant share that has not suppressed
// the role and has no refuse filter covering what is free, and offers that
// framework all of the agent's free resources. Shares are cached per role
// and per framework-in-role and updated as offers are made; the sorted orders
// are built once per run and kept sorted by moving only the entries whose
// share grew. Ties go to the entry allocated fewer times, then to the smaller
// name, so runs are deterministic.
//
// Roles are hierarchical (Mesos's docs/roles.md): "eng/web" and "eng/batch"
// share eng's part of the cluster, eng's weight weighs eng's subtree against
// its siblings, and "eng/web"'s weight weighs it against "eng/batch". See
// node in tree.go.
//
// The allocator starts no goroutine; the master calls Allocate (see package
// allocator). All methods are safe for concurrent use.
package hierarchical

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/gearboxd/gearbox/master/allocator"
)

// Config configures an allocator. The zero value is usable.
type Config struct {
	// Now is the clock for refuse filters; time.Now if nil.
	Now func() time.Time
	// MinAllocatable: an agent's free resources are offered only if they
	// contain at least one of these (Mesos's --min_allocatable_resources,
	// default cpus:0.01|mem:32).
	MinAllocatable []allocator.Resources
	// ObserveRun, if set, is called with each Allocate's duration
	// (allocator.RunHistogram.ObserveRun fits).
	ObserveRun func(time.Duration)
}

// DefaultMinAllocatable is Mesos's cpus:0.01|mem:32.
var DefaultMinAllocatable = []allocator.Resources{{CPUs: 0.01}, {MemoryBytes: 32 << 20}}

// Allocator is the hierarchical DRF allocator.
type Allocator struct {
	cfg Config

	mu          sync.Mutex
	agents      map[allocator.AgentID]*agent
	agentOrder  []*agent // sorted by ID; nil when agents changed
	frameworks  map[allocator.FrameworkID]*framework
	roles       map[string]*role
	weights     map[string]float64
	total       scalars                                       // all agents' totals
	byFramework map[allocator.FrameworkID]map[*agent]struct{} // agents holding a framework's allocations
}

var _ allocator.Allocator = (*Allocator)(nil)

// New returns an empty allocator.
func New(cfg Config) *Allocator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MinAllocatable == nil {
		cfg.MinAllocatable = DefaultMinAllocatable
	}
	return &Allocator{
		cfg:         cfg,
		agents:      map[allocator.AgentID]*agent{},
		frameworks:  map[allocator.FrameworkID]*framework{},
		roles:       map[string]*role{},
		weights:     map[string]float64{},
		byFramework: map[allocator.FrameworkID]map[*agent]struct{}{},
	}
}

// allocKey names one allocation on an agent.
type allocKey struct {
	fw   allocator.FrameworkID
	role string
}

type agent struct {
	id        allocator.AgentID
	info      allocator.AgentInfo
	active    bool
	allocated allocator.Resources
	allocs    []agentAlloc
}

// agentAlloc is one allocation on an agent. An agent holds few, so a slice
// is cheaper than a map in the allocation loop.
type agentAlloc struct {
	key allocKey
	res allocator.Resources
}

func (ag *agent) free() allocator.Resources { return ag.info.Total.Subtract(ag.allocated) }

// alloc returns the allocation k on ag.
func (ag *agent) alloc(k allocKey) (allocator.Resources, bool) {
	for _, x := range ag.allocs {
		if x.key == k {
			return x.res, true
		}
	}
	return allocator.Resources{}, false
}

// setAlloc sets the allocation k on ag to res, removing it if res is empty.
func (ag *agent) setAlloc(k allocKey, res allocator.Resources) {
	for i, x := range ag.allocs {
		if x.key != k {
			continue
		}
		if res.Empty() {
			ag.allocs = slices.Delete(ag.allocs, i, i+1)
		} else {
			ag.allocs[i].res = res
		}
		return
	}
	if !res.Empty() {
		ag.allocs = append(ag.allocs, agentAlloc{k, res})
	}
}

type framework struct {
	id         allocator.FrameworkID
	active     bool
	roles      map[string]bool // subscribed
	suppressed map[string]bool
	filters    map[filterKey][]filter
	inRole     map[string]*client // sorter entries, subscribed or holding an allocation
}

type filterKey struct {
	role  string
	agent allocator.AgentID
}

// filter is a refuse filter: res are not offered again before expires.
type filter struct {
	res     allocator.Resources
	expires time.Time
}

// AddAgent implements allocator.Allocator.
func (a *Allocator) AddAgent(id allocator.AgentID, info allocator.AgentInfo, used []allocator.Allocation) error {
	if id == "" {
		return fmt.Errorf("%w: agent id: must not be empty", allocator.ErrInvalid)
	}
	if err := info.Total.Validate(); err != nil {
		return fmt.Errorf("agent %q total: %w", id, err)
	}
	for _, u := range used {
		if err := validateAllocation(u); err != nil {
			return fmt.Errorf("agent %q used: %w", id, err)
		}
		if u.Agent != "" && u.Agent != id {
			return fmt.Errorf("%w: agent %q used: entry names agent %q", allocator.ErrInvalid, id, u.Agent)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.agents[id]; ok {
		return fmt.Errorf("%w: agent %q", allocator.ErrExists, id)
	}
	ag := &agent{id: id, info: info, active: true}
	a.agents[id] = ag
	a.agentOrder = nil
	a.total = a.total.add(scalarsOf(info.Total))
	for _, u := range used {
		a.allocate(ag, u.Framework, u.Role, u.Resources)
	}
	return nil
}

func validateAllocation(u allocator.Allocation) error {
	if u.Framework == "" {
		return fmt.Errorf("%w: framework id: must not be empty", allocator.ErrInvalid)
	}
	if err := allocator.ValidateRole(u.Role); err != nil {
		return err
	}
	return u.Resources.Validate()
}

// UpdateAgent implements allocator.Allocator.
func (a *Allocator) UpdateAgent(id allocator.AgentID, info allocator.AgentInfo) error {
	if err := info.Total.Validate(); err != nil {
		return fmt.Errorf("agent %q total: %w", id, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ag, err := a.agent(id)
	if err != nil {
		return err
	}
	a.total = a.total.sub(scalarsOf(ag.info.Total)).add(scalarsOf(info.Total))
	ag.info = info
	return nil
}

// RemoveAgent implements allocator.Allocator.
func (a *Allocator) RemoveAgent(id allocator.AgentID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ag, err := a.agent(id)
	if err != nil {
		return err
	}
	for _, x := range slices.Clone(ag.allocs) {
		a.unallocate(ag, x.key.fw, x.key.role, x.res)
	}
	for _, fw := range a.frameworks {
		for k := range fw.filters {
			if k.agent == id {
				delete(fw.filters, k)
			}
		}
	}
	a.total = a.total.sub(scalarsOf(ag.info.Total))
	delete(a.agents, id)
	a.agentOrder = nil
	return nil
}

// ActivateAgent implements allocator.Allocator.
func (a *Allocator) ActivateAgent(id allocator.AgentID) error { return a.setAgentActive(id, true) }

// DeactivateAgent implements allocator.Allocator.
func (a *Allocator) DeactivateAgent(id allocator.AgentID) error { return a.setAgentActive(id, false) }

func (a *Allocator) setAgentActive(id allocator.AgentID, active bool) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	ag, err := a.agent(id)
	if err != nil {
		return err
	}
	ag.active = active
	return nil
}

func (a *Allocator) agent(id allocator.AgentID) (*agent, error) {
	ag, ok := a.agents[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", allocator.ErrUnknownAgent, id)
	}
	return ag, nil
}

func (a *Allocator) framework(id allocator.FrameworkID) (*framework, error) {
	fw, ok := a.frameworks[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", allocator.ErrUnknownFramework, id)
	}
	return fw, nil
}

// allocate adds res to the allocation of fw in role on ag, and to the
// sorters if fw is known.
func (a *Allocator) allocate(ag *agent, fw allocator.FrameworkID, role string, res allocator.Resources) {
	k := allocKey{fw, role}
	held, _ := ag.alloc(k)
	ag.setAlloc(k, held.Add(res))
	ag.allocated = ag.allocated.Add(res)
	byAgent := a.byFramework[fw]
	if byAgent == nil {
		byAgent = map[*agent]struct{}{}
		a.byFramework[fw] = byAgent
	}
	byAgent[ag] = struct{}{}
	if f, ok := a.frameworks[fw]; ok {
		a.client(f, role).add(scalarsOf(res))
	}
}

// unallocate removes res (contained in the allocation) from the allocation
// of fw in role on ag, and from the sorters if fw is known.
func (a *Allocator) unallocate(ag *agent, fw allocator.FrameworkID, role string, res allocator.Resources) {
	k := allocKey{fw, role}
	held, _ := ag.alloc(k)
	ag.setAlloc(k, held.Subtract(res))
	if !a.holdsOn(ag, fw) {
		delete(a.byFramework[fw], ag)
		if len(a.byFramework[fw]) == 0 {
			delete(a.byFramework, fw)
		}
	}
	ag.allocated = ag.allocated.Subtract(res)
	if f, ok := a.frameworks[fw]; ok {
		c := a.client(f, role)
		c.sub(scalarsOf(res))
		a.dropClientIfIdle(f, c)
	}
}

// holdsOn reports whether fw has any allocation on ag.
func (a *Allocator) holdsOn(ag *agent, fw allocator.FrameworkID) bool {
	for _, x := range ag.allocs {
		if x.key.fw == fw {
			return true
		}
	}
	return false
}

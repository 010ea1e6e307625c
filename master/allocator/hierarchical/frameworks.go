package hierarchical

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/gearboxd/gearbox/master/allocator"
)

// roleSets validates info and returns its subscribed and suppressed roles.
func roleSets(info allocator.FrameworkInfo) (roles, suppressed map[string]bool, err error) {
	roles = map[string]bool{}
	for _, r := range info.Roles {
		if err := allocator.ValidateRole(r); err != nil {
			return nil, nil, fmt.Errorf("roles: %w", err)
		}
		roles[r] = true
	}
	if len(roles) == 0 {
		roles[allocator.DefaultRole] = true
	}
	suppressed = map[string]bool{}
	for _, r := range info.SuppressedRoles {
		if !roles[r] {
			return nil, nil, fmt.Errorf("%w: suppressed_roles: %q is not one of the framework's roles", allocator.ErrInvalid, r)
		}
		suppressed[r] = true
	}
	return roles, suppressed, nil
}

// AddFramework implements allocator.Allocator.
func (a *Allocator) AddFramework(id allocator.FrameworkID, info allocator.FrameworkInfo, used []allocator.Allocation, active bool) error {
	if id == "" {
		return fmt.Errorf("%w: framework id: must not be empty", allocator.ErrInvalid)
	}
	roles, suppressed, err := roleSets(info)
	if err != nil {
		return fmt.Errorf("framework %q: %w", id, err)
	}
	for _, u := range used {
		if err := validateAllocation(u); err != nil {
			return fmt.Errorf("framework %q used: %w", id, err)
		}
		if u.Framework != id {
			return fmt.Errorf("%w: framework %q used: entry names framework %q", allocator.ErrInvalid, id, u.Framework)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.frameworks[id]; ok {
		return fmt.Errorf("%w: framework %q", allocator.ErrExists, id)
	}
	// Replace what agents reported with the framework's own account, then
	// credit all of the framework's allocations to the sorters.
	for _, u := range used {
		ag, ok := a.agents[u.Agent]
		if !ok {
			continue
		}
		k := allocKey{id, u.Role}
		old, _ := ag.alloc(k)
		ag.allocated = ag.allocated.Subtract(old).Add(u.Resources)
		ag.setAlloc(k, u.Resources)
		if a.byFramework[id] == nil {
			a.byFramework[id] = map[*agent]struct{}{}
		}
		a.byFramework[id][ag] = struct{}{}
	}
	fw := &framework{id: id, active: active, roles: roles, suppressed: suppressed,
		filters: map[filterKey][]filter{}, inRole: map[string]*client{}}
	a.frameworks[id] = fw
	for r := range roles {
		a.client(fw, r)
	}
	for ag := range a.byFramework[id] {
		for _, x := range ag.allocs {
			if x.key.fw == id {
				a.client(fw, x.key.role).add(scalarsOf(x.res))
			}
		}
	}
	return nil
}

// UpdateFramework implements allocator.Allocator.
func (a *Allocator) UpdateFramework(id allocator.FrameworkID, info allocator.FrameworkInfo) error {
	roles, suppressed, err := roleSets(info)
	if err != nil {
		return fmt.Errorf("framework %q: %w", id, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.framework(id)
	if err != nil {
		return err
	}
	fw.roles, fw.suppressed = roles, suppressed
	for k := range fw.filters {
		if !roles[k.role] {
			delete(fw.filters, k)
		}
	}
	for _, c := range slices.Collect(maps.Values(fw.inRole)) {
		a.dropClientIfIdle(fw, c)
	}
	for r := range roles {
		a.client(fw, r)
	}
	return nil
}

// RemoveFramework implements allocator.Allocator.
func (a *Allocator) RemoveFramework(id allocator.FrameworkID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.framework(id)
	if err != nil {
		return err
	}
	for _, ag := range slices.SortedFunc(maps.Keys(a.byFramework[id]), byID) {
		for _, x := range slices.Clone(ag.allocs) {
			if x.key.fw == id {
				a.unallocate(ag, id, x.key.role, x.res)
			}
		}
	}
	for _, c := range slices.Collect(maps.Values(fw.inRole)) {
		a.dropClient(fw, c)
	}
	delete(a.frameworks, id)
	return nil
}

// ActivateFramework implements allocator.Allocator.
func (a *Allocator) ActivateFramework(id allocator.FrameworkID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.framework(id)
	if err != nil {
		return err
	}
	fw.active = true
	return nil
}

// DeactivateFramework implements allocator.Allocator.
func (a *Allocator) DeactivateFramework(id allocator.FrameworkID) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.framework(id)
	if err != nil {
		return err
	}
	fw.active = false
	clear(fw.filters)
	return nil
}

// Recover implements allocator.Allocator.
func (a *Allocator) Recover(fwID allocator.FrameworkID, agentID allocator.AgentID, role string, res allocator.Resources, refuse time.Duration) error {
	if err := res.Validate(); err != nil {
		return fmt.Errorf("recover on agent %q: %w", agentID, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ag, err := a.agent(agentID)
	if err != nil {
		return err
	}
	held, ok := ag.alloc(allocKey{fwID, role})
	if !ok || !held.Contains(res) {
		return fmt.Errorf("%w: recover %s of framework %q in role %q on agent %q: it holds %s there",
			allocator.ErrNotAllocated, res, fwID, role, agentID, held)
	}
	a.unallocate(ag, fwID, role, res)
	fw, known := a.frameworks[fwID]
	if refuse <= 0 || !known || res.Empty() {
		return nil
	}
	k := filterKey{role, agentID}
	fw.filters[k] = append(fw.filters[k], filter{res: res, expires: a.cfg.Now().Add(min(refuse, allocator.MaxRefuse))})
	return nil
}

// Claim implements allocator.Allocator.
func (a *Allocator) Claim(fwID allocator.FrameworkID, agentID allocator.AgentID, role string, res allocator.Resources) error {
	if err := allocator.ValidateRole(role); err != nil {
		return fmt.Errorf("claim on agent %q: %w", agentID, err)
	}
	if err := res.Validate(); err != nil {
		return fmt.Errorf("claim on agent %q: %w", agentID, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	ag, err := a.agent(agentID)
	if err != nil {
		return err
	}
	if _, err := a.framework(fwID); err != nil {
		return err
	}
	if free := ag.free(); !free.Contains(res) {
		return fmt.Errorf("%w: claim %s on agent %q: it has %s free", allocator.ErrInsufficient, res, agentID, free)
	}
	a.allocate(ag, fwID, role, res)
	return nil
}

// frameworkRoles returns roles, or all of fw's roles if none, checking each
// is one of fw's.
func frameworkRoles(fw *framework, roles []string) ([]string, error) {
	if len(roles) == 0 {
		return slices.Collect(maps.Keys(fw.roles)), nil
	}
	for _, r := range roles {
		if !fw.roles[r] {
			return nil, fmt.Errorf("%w: roles: framework %q is not subscribed to role %q", allocator.ErrInvalid, fw.id, r)
		}
	}
	return roles, nil
}

// SuppressOffers implements allocator.Allocator.
func (a *Allocator) SuppressOffers(id allocator.FrameworkID, roles []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.framework(id)
	if err != nil {
		return err
	}
	roles, err = frameworkRoles(fw, roles)
	if err != nil {
		return err
	}
	for _, r := range roles {
		fw.suppressed[r] = true
	}
	return nil
}

// ReviveOffers implements allocator.Allocator.
func (a *Allocator) ReviveOffers(id allocator.FrameworkID, roles []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	fw, err := a.framework(id)
	if err != nil {
		return err
	}
	roles, err = frameworkRoles(fw, roles)
	if err != nil {
		return err
	}
	for _, r := range roles {
		delete(fw.suppressed, r)
		for k := range fw.filters {
			if k.role == r {
				delete(fw.filters, k)
			}
		}
	}
	return nil
}

package hierarchical

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/gearboxd/gearbox/master/allocator"
)

// UpdateWeights implements allocator.Allocator.
func (a *Allocator) UpdateWeights(weights map[string]float64) error {
	for r, w := range weights {
		if err := allocator.ValidateRole(r); err != nil {
			return fmt.Errorf("weights: %w", err)
		}
		if !(w > 0) || math.IsInf(w, 0) {
			return fmt.Errorf("%w: weights: role %q weight %v: must be a finite number > 0", allocator.ErrInvalid, r, w)
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	maps.Copy(a.weights, weights)
	return nil
}

// Weights implements allocator.Allocator.
func (a *Allocator) Weights() map[string]float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.weights)
}

func (a *Allocator) weight(role string) float64 {
	if w, ok := a.weights[role]; ok {
		return w
	}
	return 1
}

// Roles implements allocator.Allocator.
func (a *Allocator) Roles() []allocator.RoleInfo {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := map[string]bool{}
	for r := range a.roles {
		names[r] = true
	}
	for r := range a.weights {
		names[r] = true
	}
	out := make([]allocator.RoleInfo, 0, len(names))
	for _, name := range slices.Sorted(maps.Keys(names)) {
		info := allocator.RoleInfo{Name: name, Weight: a.weight(name)}
		if r, ok := a.roles[name]; ok {
			for id, c := range r.clients {
				if c.fw.roles[name] {
					info.Frameworks = append(info.Frameworks, id)
				}
			}
			slices.Sort(info.Frameworks)
			info.Allocated = allocator.Resources{CPUs: r.alloc.cpus, MemoryBytes: r.alloc.mem, DiskBytes: r.alloc.disk}
		}
		out = append(out, info)
	}
	return out
}

package hierarchical

import (
	"math"

	"github.com/gearboxd/gearbox/master/allocator"
)

// scalars are the resources shares are computed over (ports are not
// scalars; Mesos's DRF ignores them too).
type scalars struct {
	cpus      float64
	mem, disk int64
}

func scalarsOf(r allocator.Resources) scalars {
	return scalars{cpus: roundCPUs(r.CPUs), mem: r.MemoryBytes, disk: r.DiskBytes}
}

func (s scalars) add(o scalars) scalars {
	return scalars{cpus: roundCPUs(s.cpus + o.cpus), mem: s.mem + o.mem, disk: s.disk + o.disk}
}

func (s scalars) sub(o scalars) scalars {
	return scalars{cpus: max(0, roundCPUs(s.cpus-o.cpus)), mem: max(0, s.mem-o.mem), disk: max(0, s.disk-o.disk)}
}

func (s scalars) zero() bool { return s.cpus <= 0 && s.mem <= 0 && s.disk <= 0 }

// roundCPUs keeps cpus to three decimals, as allocator.Resources does.
func roundCPUs(v float64) float64 { return math.Round(v*1000) / 1000 }

// dominantShare is the largest fraction of total that s holds.
func dominantShare(s, total scalars) float64 {
	var d float64
	if total.cpus > 0 {
		d = max(d, s.cpus/total.cpus)
	}
	if total.mem > 0 {
		d = max(d, float64(s.mem)/float64(total.mem))
	}
	if total.disk > 0 {
		d = max(d, float64(s.disk)/float64(total.disk))
	}
	return d
}

// role is a role's entry in the role sorter: its frameworks' allocations in
// it (known frameworks only) and its frameworks' entries.
type role struct {
	name    string
	alloc   scalars
	count   int // offers made to the role, the first tie-break
	clients map[allocator.FrameworkID]*client
	order   []*client // eligible clients by share, built per run
}

// client is a framework's entry in a role's sorter.
type client struct {
	fw    *framework
	role  *role
	alloc scalars
	count int
	share float64
}

func (c *client) add(s scalars) { c.alloc = c.alloc.add(s); c.role.alloc = c.role.alloc.add(s) }
func (c *client) sub(s scalars) { c.alloc = c.alloc.sub(s); c.role.alloc = c.role.alloc.sub(s) }

// client returns fw's entry in role, creating it (and the role) if needed.
func (a *Allocator) client(fw *framework, name string) *client {
	if c, ok := fw.inRole[name]; ok {
		return c
	}
	r, ok := a.roles[name]
	if !ok {
		r = &role{name: name, clients: map[allocator.FrameworkID]*client{}}
		a.roles[name] = r
	}
	c := &client{fw: fw, role: r}
	r.clients[fw.id] = c
	fw.inRole[name] = c
	return c
}

// dropClientIfIdle removes c if fw neither subscribes to its role nor holds
// an allocation in it, and the role if it has no entry left.
func (a *Allocator) dropClientIfIdle(fw *framework, c *client) {
	if fw.roles[c.role.name] || !c.alloc.zero() || a.holdsInRole(fw.id, c.role.name) {
		return
	}
	a.dropClient(fw, c)
}

func (a *Allocator) dropClient(fw *framework, c *client) {
	delete(fw.inRole, c.role.name)
	delete(c.role.clients, fw.id)
	if len(c.role.clients) == 0 {
		delete(a.roles, c.role.name)
	}
}

// holdsInRole reports whether fw holds an allocation in role on any agent
// (an allocation of ports only has zero scalars but still counts).
func (a *Allocator) holdsInRole(fw allocator.FrameworkID, role string) bool {
	for ag := range a.byFramework[fw] {
		if _, ok := ag.alloc(allocKey{fw, role}); ok {
			return true
		}
	}
	return false
}

// less orders sorter entries: lower share, then fewer offers, then name.
func less(shareX, shareY float64, countX, countY int, nameX, nameY string) bool {
	if shareX != shareY {
		return shareX < shareY
	}
	if countX != countY {
		return countX < countY
	}
	return nameX < nameY
}

func (c *client) less(o *client) bool {
	return less(c.share, o.share, c.count, o.count, string(c.fw.id), string(o.fw.id))
}

// sink moves s[i], whose key only grew, right to its place; s[:i] and
// s[i+1:] are sorted.
func sink[T interface{ less(T) bool }](s []T, i int) {
	for ; i+1 < len(s) && s[i+1].less(s[i]); i++ {
		s[i], s[i+1] = s[i+1], s[i]
	}
}

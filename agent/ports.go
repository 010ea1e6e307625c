package agent

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/isolators/cni"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// defaultPorts is Mesos's default ports resource.
var defaultPorts = Ports{{31000, 32000}}

// PortRange is an inclusive range of host ports.
type PortRange struct{ Begin, End uint16 }

// Ports is a set of host ports (Mesos's ports resource, Value.Ranges):
// sorted, disjoint, non-adjacent ranges.
type Ports []PortRange

// ParsePorts reads Mesos's form: "[31000-32000,33000-33100]".
func ParsePorts(s string) (Ports, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return nil, fmt.Errorf("ports %q: write ranges in brackets, e.g. [31000-32000,33000-33100]", s)
	}
	var set portSet
	for _, part := range strings.Split(s[1:len(s)-1], ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			hi = lo
		}
		b, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
		e, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
		if err1 != nil || err2 != nil || b == 0 || b > e {
			return nil, fmt.Errorf("ports range %q: give BEGIN-END with 1 <= BEGIN <= END <= 65535", part)
		}
		for p := b; p <= e; p++ {
			set.add(uint16(p))
		}
	}
	return set.ranges(), nil
}

func (p Ports) String() string {
	var parts []string
	for _, r := range p {
		parts = append(parts, fmt.Sprintf("%d-%d", r.Begin, r.End))
	}
	return "[" + strings.Join(parts, ",") + "]"
}

func (p Ports) contains(port uint16) bool {
	i := sort.Search(len(p), func(i int) bool { return p[i].End >= port })
	return i < len(p) && p[i].Begin <= port
}

func (p Ports) set() *portSet {
	var s portSet
	for _, r := range p {
		for q := uint32(r.Begin); q <= uint32(r.End); q++ {
			s.add(uint16(q))
		}
	}
	return &s
}

// union and minus are set operations on ports.
func (p Ports) union(o Ports) Ports {
	s := p.set()
	for _, r := range o {
		for q := uint32(r.Begin); q <= uint32(r.End); q++ {
			s.add(uint16(q))
		}
	}
	return s.ranges()
}

func (p Ports) minus(o Ports) Ports {
	s := p.set()
	for _, r := range o {
		for q := uint32(r.Begin); q <= uint32(r.End); q++ {
			s.del(uint16(q))
		}
	}
	return s.ranges()
}

func portsToProto(p Ports) *typesv1.Ranges {
	if p == nil {
		return nil
	}
	out := &typesv1.Ranges{}
	for _, r := range p {
		out.Range = append(out.Range, &typesv1.Range{Begin: uint64(r.Begin), End: uint64(r.End)})
	}
	return out
}

// portSet is a bitmap of the 65536 ports.
type portSet [1 << 16 / 64]uint64

func (s *portSet) add(p uint16)      { s[p/64] |= 1 << (p % 64) }
func (s *portSet) del(p uint16)      { s[p/64] &^= 1 << (p % 64) }
func (s *portSet) has(p uint16) bool { return s[p/64]&(1<<(p%64)) != 0 }

func (s *portSet) ranges() Ports {
	var out Ports
	for q := 1; q < 1<<16; q++ {
		if !s.has(uint16(q)) {
			continue
		}
		if n := len(out); n > 0 && int(out[n-1].End) == q-1 {
			out[n-1].End = uint16(q)
		} else {
			out = append(out, PortRange{uint16(q), uint16(q)})
		}
	}
	return out
}

// hostPorts are the host ports a container holds.
func hostPorts(n isolators.Network) Ports {
	var s portSet
	for _, pm := range n.PortMappings {
		if pm.HostPort != 0 {
			s.add(pm.HostPort)
		}
	}
	return s.ranges()
}

// portOwners maps each host port held by a live container to it.
func portOwners(cs []containerizer.Container) map[uint16]containerizer.ContainerID {
	out := map[uint16]containerizer.ContainerID{}
	for _, c := range cs {
		if c.State.Terminal() {
			continue
		}
		for _, pm := range c.Network.PortMappings {
			out[pm.HostPort] = c.ID
		}
	}
	return out
}

// assignPorts checks a launch's host ports against the agent's ports
// resource and what is taken (taken: held by live containers and launches
// in flight), and picks free ones for the mappings that ask the agent to.
func assignPorts(total, taken Ports, owners map[uint16]containerizer.ContainerID, n *isolators.Network) error {
	used := taken
	var pms []isolators.PortMapping
	for _, pm := range n.PortMappings {
		if pm.HostPort == 0 {
			continue
		}
		if !total.contains(pm.HostPort) {
			return errs.New(errdefs.ErrInvalidArgument, "host port %d is outside this agent's ports resource %s: map a port in it, or give only the container port to have one picked", pm.HostPort, total)
		}
		if used.contains(pm.HostPort) {
			who := "a launch under way"
			if id, ok := owners[pm.HostPort]; ok {
				who = "container " + string(id)
			}
			return errs.New(errdefs.ErrAlreadyExists, "host port %d is already taken on this agent (by %s): map another, or give only the container port to have one picked", pm.HostPort, who)
		}
		used = used.union(Ports{{pm.HostPort, pm.HostPort}})
	}
	for _, pm := range n.PortMappings {
		if pm.HostPort == 0 {
			free := total.minus(used)
			if len(free) == 0 {
				return errs.New(errdefs.ErrFailedPrecondition, "not enough free resources on this agent: ports: every port of %s is taken", total)
			}
			pm.HostPort = free[0].Begin
			used = used.union(Ports{{pm.HostPort, pm.HostPort}})
		}
		pms = append(pms, pm)
	}
	n.PortMappings = pms
	return nil
}

// checkMappings refuses malformed mappings before any port is taken.
func checkMappings(n isolators.Network) error {
	return cni.CheckPortMappings(n.PortMappings)
}

// checkPortNumbers refuses a mapping's port beyond 65535, which the
// domain's uint16 cannot hold.
func checkPortNumbers(pms []*typesv1.PortMapping) error {
	for _, pm := range pms {
		for _, p := range []uint32{pm.GetHostPort(), pm.GetContainerPort()} {
			if p > 65535 {
				return errs.New(errdefs.ErrInvalidArgument, "port_mappings: port %d is out of range 1-65535", p)
			}
		}
	}
	return nil
}

package master

import (
	"fmt"
	"sort"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Host ports are a resource, as Mesos's ports: an agent offers ranges
// (its ports resource, [31000-32000] by default); a task holds the host
// ports it asked for by number and, once its agent reports them, those the
// agent picked for it. Placement refuses an agent where a wanted port is
// outside its ranges or held by another task.

func portsFromProto(r *typesv1.Ranges) []store.PortRange {
	var out []store.PortRange
	for _, x := range r.GetRange() {
		out = append(out, store.PortRange{Begin: uint32(x.GetBegin()), End: uint32(x.GetEnd())})
	}
	return out
}

func portsToProto(p []store.PortRange) *typesv1.Ranges {
	if len(p) == 0 {
		return nil
	}
	out := &typesv1.Ranges{}
	for _, x := range p {
		out.Range = append(out.Range, &typesv1.Range{Begin: uint64(x.Begin), End: uint64(x.End)})
	}
	return out
}

func mappingsToProto(pms []store.PortMapping) []*typesv1.PortMapping {
	var out []*typesv1.PortMapping
	for _, pm := range pms {
		out = append(out, &typesv1.PortMapping{HostPort: pm.HostPort, ContainerPort: pm.ContainerPort, Protocol: pm.Protocol})
	}
	return out
}

// checkPortRanges refuses ranges that are not ports.
func checkPortRanges(r *typesv1.Ranges) error {
	for _, x := range r.GetRange() {
		if x.GetBegin() < 1 || x.GetBegin() > x.GetEnd() || x.GetEnd() > 65535 {
			return status.Errorf(codes.InvalidArgument, "resources: ports range [%d-%d]: give 1 <= begin <= end <= 65535", x.GetBegin(), x.GetEnd())
		}
	}
	return nil
}

func inPorts(p []store.PortRange, port uint32) bool {
	for _, x := range p {
		if x.Begin <= port && port <= x.End {
			return true
		}
	}
	return false
}

// unionPorts merges two sets of ranges into sorted, disjoint ones.
func unionPorts(a, b []store.PortRange) []store.PortRange {
	all := append(append([]store.PortRange{}, a...), b...)
	if len(all) == 0 {
		return nil
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Begin < all[j].Begin })
	out := []store.PortRange{all[0]}
	for _, x := range all[1:] {
		last := &out[len(out)-1]
		if x.Begin <= last.End+1 {
			last.End = max(last.End, x.End)
		} else {
			out = append(out, x)
		}
	}
	return out
}

func portCount(p []store.PortRange) int {
	n := 0
	for _, x := range p {
		n += int(x.End-x.Begin) + 1
	}
	return n
}

// taskPorts are the host ports a task holds: those it asked for and those
// its agent reported.
func taskPorts(t *store.Task) []store.PortRange {
	out := t.Resources.Ports
	for _, pm := range t.PortMappings {
		if pm.HostPort != 0 {
			out = unionPorts(out, []store.PortRange{{Begin: pm.HostPort, End: pm.HostPort}})
		}
	}
	return out
}

// wantedPorts are a launch's host ports given by number, as ranges, and
// how many it leaves to the agent to pick.
func wantedPorts(req *masterv1.LaunchTaskRequest) ([]store.PortRange, int, error) {
	var out []store.PortRange
	picked := 0
	seen := map[uint32]bool{}
	for _, pm := range req.GetContainer().GetPortMappings() {
		hp, cp := pm.GetHostPort(), pm.GetContainerPort()
		if hp > 65535 || cp < 1 || cp > 65535 {
			return nil, 0, status.Errorf(codes.InvalidArgument, "container.port_mappings: %d:%d: ports are 1-65535 (host port 0: the agent picks one)", hp, cp)
		}
		if hp == 0 {
			picked++
			continue
		}
		if seen[hp] {
			return nil, 0, status.Errorf(codes.InvalidArgument, "container.port_mappings: host port %d is mapped twice", hp)
		}
		seen[hp] = true
		out = unionPorts(out, []store.PortRange{{Begin: hp, End: hp}})
	}
	return out, picked, nil
}

// portsMisfit says why agent a cannot give want (by number) and picked
// more ports, or "" when it can, with the code for a launch that named a:
// AlreadyExists for a port another task holds. Callers hold m.mu.
func (m *Master) portsMisfit(a *agentEntry, want []store.PortRange, picked int) (string, codes.Code) {
	if len(want) == 0 && picked == 0 {
		return "", codes.OK
	}
	holder := map[uint32]string{}
	var used []store.PortRange
	for _, t := range m.agentTasks(a.ID) {
		if terminal(t.State) {
			continue
		}
		for _, x := range taskPorts(t) {
			for p := x.Begin; p <= x.End; p++ {
				holder[p] = t.ID
			}
		}
		used = unionPorts(used, taskPorts(t))
	}
	for _, x := range want {
		for p := x.Begin; p <= x.End; p++ {
			if !inPorts(a.Resources.Ports, p) {
				return fmt.Sprintf("host port %d is not among its ports %s", p, fmtPorts(a.Resources.Ports)), codes.InvalidArgument
			}
			if id, ok := holder[p]; ok {
				return fmt.Sprintf("host port %d is taken by task %s", p, id), codes.AlreadyExists
			}
		}
	}
	if free := portCount(a.Resources.Ports) - portCount(used) - portCount(want); picked > free {
		return fmt.Sprintf("%d ports to pick, %d free of %s", picked, max(free, 0), fmtPorts(a.Resources.Ports)), codes.ResourceExhausted
	}
	return "", codes.OK
}

func fmtPorts(p []store.PortRange) string {
	s := "["
	for i, x := range p {
		if i > 0 {
			s += ","
		}
		s += fmt.Sprintf("%d-%d", x.Begin, x.End)
	}
	return s + "]"
}

// setNetwork records where a task's container is reachable, from its
// agent's report. Callers hold m.mu.
func setNetwork(t *store.Task, st *masterv1.TaskStatus) {
	if len(st.GetIpAddresses()) == 0 && len(st.GetPortMappings()) == 0 {
		return
	}
	t.IPAddresses = st.GetIpAddresses()
	t.PortMappings = nil
	for _, pm := range st.GetPortMappings() {
		t.PortMappings = append(t.PortMappings, store.PortMapping{HostPort: pm.GetHostPort(), ContainerPort: pm.GetContainerPort(), Protocol: pm.GetProtocol()})
	}
}

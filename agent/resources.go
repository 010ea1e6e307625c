package agent

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/isolators"
)

// ResourceSet is an amount of the agent's resources.
type ResourceSet struct {
	CPUs   float64
	Memory int64 // bytes
	Disk   int64 // bytes
	Ports  Ports // host ports
}

func (r ResourceSet) sub(o ResourceSet) ResourceSet {
	return ResourceSet{CPUs: r.CPUs - o.CPUs, Memory: r.Memory - o.Memory, Disk: r.Disk - o.Disk, Ports: r.Ports.minus(o.Ports)}
}

func (r ResourceSet) add(o ResourceSet) ResourceSet {
	return ResourceSet{CPUs: r.CPUs + o.CPUs, Memory: r.Memory + o.Memory, Disk: r.Disk + o.Disk, Ports: r.Ports.union(o.Ports)}
}

// ParseResources reads Mesos's --resources form: "cpus:4;mem:8192;disk:1e5"
// with mem and disk in MB, or with a unit ("mem:8GiB"), and ports as
// ranges ("ports:[31000-32000]").
func ParseResources(s string) (ResourceSet, map[string]bool, error) {
	var r ResourceSet
	set := map[string]bool{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, ":")
		name, val = strings.TrimSpace(name), strings.TrimSpace(val)
		if !ok || val == "" {
			return r, nil, fmt.Errorf("resource %q: write NAME:VALUE, e.g. cpus:4;mem:8192;disk:100000", part)
		}
		if set[name] {
			return r, nil, fmt.Errorf("resource %q is given twice", name)
		}
		switch name {
		case "cpus":
			v, err := strconv.ParseFloat(val, 64)
			if err != nil || v < 0 || math.IsInf(v, 0) || math.IsNaN(v) {
				return r, nil, fmt.Errorf("cpus %q: give a non-negative number", val)
			}
			r.CPUs = v
		case "ports":
			p, err := ParsePorts(val)
			if err != nil {
				return r, nil, err
			}
			r.Ports = p
		case "mem", "disk":
			n, err := parseMB(val)
			if err != nil {
				return r, nil, fmt.Errorf("%s %q: %v", name, val, err)
			}
			if name == "mem" {
				r.Memory = n
			} else {
				r.Disk = n
			}
		default:
			return r, nil, fmt.Errorf("unknown resource %q: gearbox knows cpus, mem, disk and ports", name)
		}
		set[name] = true
	}
	return r, set, nil
}

// parseMB reads a plain number as MB (Mesos) or a size with a unit.
func parseMB(v string) (int64, error) {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		if f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1<<40 {
			return 0, fmt.Errorf("give a non-negative number of MB")
		}
		return int64(f * (1 << 20)), nil
	}
	return units.ParseSize(v)
}

// ParseAttributes reads "rack:r1;zone:a".
func ParseAttributes(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, ":")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("attribute %q: write NAME:VALUE, e.g. rack:r1;zone:a", part)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return out, nil
}

// ResourceOverrides is the config key resources, read once at load from
// Mesos's --resources form ("cpus:4;mem:8192;ports:[31000-32000]"): the
// resources it names override what the agent detects.
type ResourceOverrides struct {
	r    ResourceSet
	set  map[string]bool
	text string // as written, for --print-config
}

// UnmarshalText reads what ParseResources reads.
func (o *ResourceOverrides) UnmarshalText(b []byte) error {
	r, set, err := ParseResources(string(b))
	if err != nil {
		return err
	}
	*o = ResourceOverrides{r: r, set: set, text: string(b)}
	return nil
}

// MarshalText writes the overrides as they were written.
func (o ResourceOverrides) MarshalText() ([]byte, error) { return []byte(o.text), nil }

// Over is detected with the overrides laid over it.
func (o ResourceOverrides) Over(detected ResourceSet) ResourceSet {
	if o.set["cpus"] {
		detected.CPUs = o.r.CPUs
	}
	if o.set["mem"] {
		detected.Memory = o.r.Memory
	}
	if o.set["disk"] {
		detected.Disk = o.r.Disk
	}
	if o.set["ports"] {
		detected.Ports = o.r.Ports
	}
	return detected
}

// Attributes is the config key attributes, read once at load from
// "rack:r1;zone:a".
type Attributes map[string]string

// UnmarshalText reads what ParseAttributes reads.
func (a *Attributes) UnmarshalText(b []byte) error {
	m, err := ParseAttributes(string(b))
	if err != nil {
		return err
	}
	*a = m
	return nil
}

// MarshalText writes the attributes in the same form, sorted by name.
func (a Attributes) MarshalText() ([]byte, error) {
	parts := make([]string, 0, len(a))
	for k, v := range a {
		parts = append(parts, k+":"+v)
	}
	sort.Strings(parts)
	return []byte(strings.Join(parts, ";")), nil
}

// detectResources measures the host and leaves a share for it, as Mesos
// does: memory and disk keep min(1 GiB / 5 GiB, half) for the host.
func detectResources(workDir string) ResourceSet {
	r := ResourceSet{CPUs: float64(runtime.NumCPU()), Memory: hostMemory(), Ports: defaultPorts}
	r.Memory -= min(1<<30, r.Memory/2)
	var st syscall.Statfs_t
	if syscall.Statfs(workDir, &st) == nil {
		disk := int64(st.Blocks) * st.Bsize
		r.Disk = disk - min(5<<30, disk/2)
	}
	return r
}

// resourceLabels describe the machine's resources (the CPU model).
func resourceLabels() map[string]string {
	out := map[string]string{}
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return out
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			out["cpu_model"] = strings.TrimSpace(v)
			break
		}
	}
	return out
}

// ledger keeps what is allocated: running containers' resources and
// launches in flight, so that concurrent launches cannot both take the
// last CPU.
type ledger struct {
	total   ResourceSet
	mu      sync.Mutex
	pending map[string]ResourceSet
}

func asSet(r isolators.Resources) ResourceSet {
	return ResourceSet{CPUs: r.CPUs, Memory: r.Memory}
}

// containerSet is what a container holds.
func containerSet(c containerizer.Container) ResourceSet {
	s := asSet(c.Resources)
	s.Ports = hostPorts(c.Network)
	return s
}

func (l *ledger) allocated(cs []containerizer.Container) ResourceSet {
	var a ResourceSet
	for _, c := range cs {
		if !c.State.Terminal() {
			if _, inFlight := l.pending[string(c.ID)]; !inFlight {
				a = a.add(containerSet(c))
			}
		}
	}
	for _, p := range l.pending {
		a = a.add(p)
	}
	return a
}

// reserve admits a launch or says, with the numbers, why it does not fit.
func (l *ledger) reserve(id string, want isolators.Resources, cs []containerizer.Container) (func(), error) {
	return l.reserveNet(id, want, nil, cs)
}

// reserveNet is reserve with the launch's network: its host ports are
// checked and taken, and those it leaves to the agent picked (into n).
func (l *ledger) reserveNet(id string, want isolators.Resources, n *isolators.Network, cs []containerizer.Container) (func(), error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	alloc := l.allocated(cs)
	free := l.total.sub(alloc)
	w := asSet(want)
	if n != nil {
		if err := assignPorts(l.total.Ports, alloc.Ports, portOwners(cs), n); err != nil {
			return nil, err
		}
		w.Ports = hostPorts(*n)
	}
	var short []string
	if w.CPUs > 0 && w.CPUs > free.CPUs+1e-9 {
		short = append(short, fmt.Sprintf("cpus: asked %g, free %g of %g (allocated %g)", w.CPUs, math.Max(free.CPUs, 0), l.total.CPUs, alloc.CPUs))
	}
	if w.Memory > 0 && w.Memory > free.Memory {
		short = append(short, fmt.Sprintf("mem: asked %s, free %s of %s (allocated %s)", units.FormatSize(w.Memory), units.FormatSize(max(free.Memory, 0)), units.FormatSize(l.total.Memory), units.FormatSize(alloc.Memory)))
	}
	if len(short) > 0 {
		sort.Strings(short)
		return nil, errs.New(errdefs.ErrFailedPrecondition, "not enough free resources on this agent: %s", strings.Join(short, "; "))
	}
	if l.pending == nil {
		l.pending = map[string]ResourceSet{}
	}
	l.pending[id] = w
	return func() {
		l.mu.Lock()
		delete(l.pending, id)
		l.mu.Unlock()
	}, nil
}

// usage is the agent's total and what is allocated of it: cs's live
// containers and the launches in flight.
func (l *ledger) usage(cs []containerizer.Container) (total, alloc ResourceSet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total, l.allocated(cs)
}

// capacity is what the agent offers in all.
func (l *ledger) capacity() ResourceSet { return l.total }

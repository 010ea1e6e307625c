// Package cgroups holds the built-in cgroups isolators: cgroups/cpu,
// cgroups/mem, cgroups/pids and cgroups/blkio (io on v2). They share one
// core that asks the host once, at start, whether it runs cgroup v1 (or
// hybrid) or v2, and refuses to start when a controller they need is
// missing.
//
// Limits go into the container's OCI spec (Prepare), so the runtime creates
// the cgroup with them in place; Update and Usage work on the cgroup itself
// through containerd's cgroups library.
package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/cgroups/v3/cgroup1"
	"github.com/containerd/cgroups/v3/cgroup1/stats"
	"github.com/containerd/cgroups/v3/cgroup2"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/isolators"
)

// Root is where cgroup hierarchies are mounted.
const Root = "/sys/fs/cgroup"

// Options tune the isolators.
type Options struct {
	// CPUHardLimit makes --cpus a CFS quota as well as a weight (Docker's
	// --cpus); false gives weight only (Mesos's default).
	CPUHardLimit bool
}

// core is what the isolators share.
type core struct {
	v2   bool
	opts Options
}

// Names are the built-in isolators, in the order they run.
var Names = []string{"cgroups/cpu", "cgroups/mem", "cgroups/pids", "cgroups/blkio"}

// New returns the named built-in isolators. It fails when a name is
// unknown or a controller one needs is missing from the host.
func New(names []string, opts Options) ([]isolators.Isolator, error) {
	c := &core{v2: cgroups.Mode() == cgroups.Unified, opts: opts}
	var out []isolators.Isolator
	for _, n := range names {
		var iso isolators.Isolator
		switch n {
		case "cgroups/cpu":
			iso = &cpu{c}
		case "cgroups/mem":
			iso = &mem{c}
		case "cgroups/pids":
			iso = &pids{c}
		case "cgroups/blkio":
			iso = &blkio{c}
		default:
			return nil, fmt.Errorf("unknown isolator %q: the built-ins are %s", n, strings.Join(Names, ", "))
		}
		if err := c.requireController(n); err != nil {
			return nil, err
		}
		out = append(out, iso)
	}
	return out, nil
}

var controllers = map[string][2]string{ // isolator → v1, v2 controller
	"cgroups/cpu": {"cpu", "cpu"}, "cgroups/mem": {"memory", "memory"},
	"cgroups/pids": {"pids", "pids"}, "cgroups/blkio": {"blkio", "io"},
}

func (c *core) requireController(isolator string) error {
	ctl := controllers[isolator]
	if c.v2 {
		data, err := os.ReadFile(filepath.Join(Root, "cgroup.controllers"))
		if err == nil && contains(strings.Fields(string(data)), ctl[1]) {
			return nil
		}
		return fmt.Errorf("isolator %s needs the cgroup v2 %q controller, which %s/cgroup.controllers does not offer: enable it in the root's cgroup.subtree_control (systemd: Delegate=yes for the agent's unit)", isolator, ctl[1], Root)
	}
	if fi, err := os.Stat(filepath.Join(Root, ctl[0])); err == nil && fi.IsDir() {
		return nil
	}
	return fmt.Errorf("isolator %s needs the cgroup v1 %q controller, which is not mounted at %s/%s: enable it (kernel command line cgroup_enable=%s) or leave %s out of --isolation", isolator, ctl[0], Root, ctl[0], ctl[0], isolator)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// file is a cgroup interface file of a container.
func (c *core) file(v1Controller, path, name string) string {
	if c.v2 {
		return filepath.Join(Root, path, name)
	}
	return filepath.Join(Root, v1Controller, path, name)
}

// update applies resources to a running container's cgroup.
func (c *core) update(path string, r *specs.LinuxResources) error {
	if c.v2 {
		m, err := cgroup2.Load(path)
		if err != nil {
			return err
		}
		return m.Update(cgroup2.ToResources(r))
	}
	cg, err := cgroup1.Load(cgroup1.StaticPath(path))
	if err != nil {
		return err
	}
	return cg.Update(r)
}

// stats reads one controller's statistics of a container's cgroup
// ("cpu", "memory", "pids" or "io"); exactly one result is set. Reading one
// controller rather than the whole cgroup keeps a usage report of 100
// containers cheap.
func (c *core) stats(path, controller string) (*v1Stats, *v2Stats, error) {
	if c.v2 {
		m, err := cgroup2.Load(path)
		if err != nil {
			return nil, nil, err
		}
		mask := map[string]cgroup2.StatMask{"cpu": cgroup2.StatCPU, "memory": cgroup2.StatMemory, "pids": cgroup2.StatPids, "io": cgroup2.StatIO}[controller]
		s, err := m.StatFiltered(mask)
		return nil, s, err
	}
	m := &v1Stats{CPU: &stats.CPUStat{Throttling: &stats.Throttle{}, Usage: &stats.CPUUsage{}}}
	var err error
	switch controller {
	case "cpu":
		if err = cgroup1.NewCpuacct(Root).Stat(path, m); err == nil {
			err = cgroup1.NewCpu(Root).Stat(path, m)
		}
	case "memory":
		err = cgroup1.NewMemory(Root).Stat(path, m)
	case "pids":
		err = cgroup1.NewPids(Root).Stat(path, m)
	case "io":
		err = cgroup1.NewBlkio(Root).Stat(path, m)
	}
	return m, nil, err
}

// readKey reads "key value" lines (memory.events, memory.oom_control).
func readKey(path, key string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == key {
			return strconv.ParseUint(f[1], 10, 64)
		}
	}
	return 0, fmt.Errorf("%s has no %s", path, key)
}

// readUint reads a file holding one number.
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

var errNoCgroup = errors.New("the container's cgroup is gone")

package cgroups

import (
	"context"
	"fmt"
	"math"
	"os"
	"syscall"

	"github.com/containerd/cgroups/v3/cgroup1/stats"
	stats2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

type (
	v1Stats = stats.Metrics
	v2Stats = stats2.Metrics
)

const cfsPeriod = 100000 // µs

// withResources changes the spec's resources through fn.
func withResources(fn func(r *specs.LinuxResources)) oci.SpecOpts {
	return func(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
		if s.Linux == nil {
			s.Linux = &specs.Linux{}
		}
		if s.Linux.Resources == nil {
			s.Linux.Resources = &specs.LinuxResources{}
		}
		fn(s.Linux.Resources)
		return nil
	}
}

// The lifecycle steps the cgroups isolators share: the runtime makes and
// removes the cgroup.
func (c *core) Recover(context.Context, []isolators.Container) error    { return nil }
func (c *core) Isolate(context.Context, isolators.Container, int) error { return nil }
func (c *core) Watch(context.Context, isolators.Container) (*isolators.Limitation, error) {
	return nil, nil
}
func (c *core) Status(context.Context, isolators.Container) (map[string]string, error) {
	return nil, nil
}
func (c *core) Cleanup(context.Context, isolators.Container) error { return nil }

// cpu is cgroups/cpu: weight and, by default, a CFS hard limit.
type cpu struct{ *core }

func (i *cpu) Name() string { return "cgroups/cpu" }

func (i *cpu) res(r isolators.Resources) func(*specs.LinuxResources) {
	return func(lr *specs.LinuxResources) {
		if r.CPUs <= 0 {
			return
		}
		shares := uint64(math.Max(2, r.CPUs*1024))
		lr.CPU = &specs.LinuxCPU{Shares: &shares}
		if i.opts.CPUHardLimit {
			quota, period := int64(r.CPUs*cfsPeriod), uint64(cfsPeriod)
			lr.CPU.Quota, lr.CPU.Period = &quota, &period
		}
	}
}

func (i *cpu) Prepare(_ context.Context, c isolators.Container) ([]oci.SpecOpts, error) {
	return []oci.SpecOpts{withResources(i.res(c.Resources))}, nil
}

func (i *cpu) Update(_ context.Context, c isolators.Container, r isolators.Resources) error {
	if r.CPUs <= 0 {
		return nil
	}
	lr := &specs.LinuxResources{}
	i.res(r)(lr)
	return i.update(c.CgroupPath, lr)
}

func (i *cpu) Usage(_ context.Context, c isolators.Container, u *isolators.Usage) error {
	s1, s2, err := i.stats(c.CgroupPath, "cpu")
	if err != nil {
		return err
	}
	if s2 != nil && s2.CPU != nil {
		u.CPUUserSeconds, u.CPUSystemSeconds = float64(s2.CPU.UserUsec)/1e6, float64(s2.CPU.SystemUsec)/1e6
		u.CPUThrottledPeriods, u.CPUThrottledSeconds = s2.CPU.NrThrottled, float64(s2.CPU.ThrottledUsec)/1e6
	}
	if s1 != nil && s1.CPU != nil {
		if s1.CPU.Usage != nil {
			u.CPUUserSeconds, u.CPUSystemSeconds = float64(s1.CPU.Usage.User)/1e9, float64(s1.CPU.Usage.Kernel)/1e9
		}
		if s1.CPU.Throttling != nil {
			u.CPUThrottledPeriods, u.CPUThrottledSeconds = s1.CPU.Throttling.ThrottledPeriods, float64(s1.CPU.Throttling.ThrottledTime)/1e9
		}
	}
	return nil
}

// mem is cgroups/mem: hard limit, soft limit, no swap; it says when the
// kernel killed the container for its limit.
type mem struct{ *core }

func (i *mem) Name() string { return "cgroups/mem" }

func (i *mem) res(r isolators.Resources) func(*specs.LinuxResources) {
	return func(lr *specs.LinuxResources) {
		if r.Memory <= 0 && r.MemorySoft <= 0 {
			return
		}
		lr.Memory = &specs.LinuxMemory{}
		if r.Memory > 0 {
			limit := r.Memory
			lr.Memory.Limit = &limit
			// No swap: memory+swap equals memory, where the host accounts swap.
			if i.v2 || swapAccounted() {
				swap := r.Memory
				lr.Memory.Swap = &swap
			}
		}
		if r.MemorySoft > 0 {
			soft := r.MemorySoft
			lr.Memory.Reservation = &soft
		}
	}
}

func swapAccounted() bool {
	_, err := os.Stat(Root + "/memory/memory.memsw.limit_in_bytes")
	return err == nil
}

func (i *mem) Prepare(_ context.Context, c isolators.Container) ([]oci.SpecOpts, error) {
	return []oci.SpecOpts{withResources(i.res(c.Resources))}, nil
}

func (i *mem) Update(_ context.Context, c isolators.Container, r isolators.Resources) error {
	if r.Memory <= 0 && r.MemorySoft <= 0 {
		return nil
	}
	lr := &specs.LinuxResources{}
	i.res(r)(lr)
	if i.v2 || lr.Memory.Swap == nil {
		return i.update(c.CgroupPath, lr)
	}
	// v1 wants memory <= memory+swap at every step: raise memsw before the
	// limit, lower it after. (cgroups/v3's own reordering swaps the limit
	// with the soft limit instead, and the kernel then says EINVAL.)
	current, err := readUint(i.file("memory", c.CgroupPath, "memory.limit_in_bytes"))
	if err != nil {
		return err
	}
	swapOnly := &specs.LinuxResources{Memory: &specs.LinuxMemory{Swap: lr.Memory.Swap}}
	rest := &specs.LinuxResources{Memory: &specs.LinuxMemory{Limit: lr.Memory.Limit, Reservation: lr.Memory.Reservation}}
	steps := []*specs.LinuxResources{rest, swapOnly}
	if uint64(*lr.Memory.Swap) > current {
		steps = []*specs.LinuxResources{swapOnly, rest}
	}
	for _, s := range steps {
		if err := i.update(c.CgroupPath, s); err != nil {
			return err
		}
	}
	return nil
}

// Watch reads the cgroup's OOM-kill counter: it is asked when the container
// has exited, before its cgroup is removed, also for one that exited while
// the agent was down.
func (i *mem) Watch(_ context.Context, c isolators.Container) (*isolators.Limitation, error) {
	var kills uint64
	var err error
	if i.v2 {
		kills, err = readKey(i.file("", c.CgroupPath, "memory.events"), "oom_kill")
	} else {
		kills, err = readKey(i.file("memory", c.CgroupPath, "memory.oom_control"), "oom_kill")
	}
	if os.IsNotExist(err) {
		return nil, errNoCgroup
	}
	if err != nil || kills == 0 {
		return nil, err
	}
	limit, peak := i.limitAndPeak(c)
	return &isolators.Limitation{
		Reason:  typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY,
		Message: fmt.Sprintf("the kernel killed the container for its memory limit of %s (peak usage %s)", mib(limit), mib(peak)),
	}, nil
}

func (i *mem) limitAndPeak(c isolators.Container) (uint64, uint64) {
	if i.v2 {
		limit, _ := readUint(i.file("", c.CgroupPath, "memory.max"))
		peak, _ := readUint(i.file("", c.CgroupPath, "memory.peak"))
		return limit, peak
	}
	limit, _ := readUint(i.file("memory", c.CgroupPath, "memory.limit_in_bytes"))
	peak, _ := readUint(i.file("memory", c.CgroupPath, "memory.max_usage_in_bytes"))
	return limit, peak
}

func mib(n uint64) string {
	if n == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func (i *mem) Usage(_ context.Context, c isolators.Container, u *isolators.Usage) error {
	s1, s2, err := i.stats(c.CgroupPath, "memory")
	if err != nil {
		return err
	}
	if s2 != nil && s2.Memory != nil {
		u.MemoryUsage, u.MemoryRSS, u.MemoryCache, u.MemoryLimit = s2.Memory.Usage, s2.Memory.Anon, s2.Memory.File, s2.Memory.UsageLimit
	}
	if s1 != nil && s1.Memory != nil {
		u.MemoryRSS, u.MemoryCache = s1.Memory.TotalRSS, s1.Memory.TotalCache
		if s1.Memory.Usage != nil {
			u.MemoryUsage, u.MemoryLimit = s1.Memory.Usage.Usage, s1.Memory.Usage.Limit
		}
	}
	_, u.MemoryPeak = i.limitAndPeak(c)
	return nil
}

// pids is cgroups/pids.
type pids struct{ *core }

func (i *pids) Name() string { return "cgroups/pids" }

func (i *pids) Prepare(_ context.Context, c isolators.Container) ([]oci.SpecOpts, error) {
	n := c.Resources.Pids
	return []oci.SpecOpts{withResources(func(lr *specs.LinuxResources) {
		if n > 0 {
			lr.Pids = &specs.LinuxPids{Limit: &n}
		}
	})}, nil
}

func (i *pids) Update(_ context.Context, c isolators.Container, r isolators.Resources) error {
	if r.Pids <= 0 {
		return nil
	}
	n := r.Pids
	return i.update(c.CgroupPath, &specs.LinuxResources{Pids: &specs.LinuxPids{Limit: &n}})
}

func (i *pids) Usage(_ context.Context, c isolators.Container, u *isolators.Usage) error {
	s1, s2, err := i.stats(c.CgroupPath, "pids")
	if err != nil {
		return err
	}
	if s2 != nil && s2.Pids != nil {
		u.Pids, u.PidsLimit = s2.Pids.Current, s2.Pids.Limit
	}
	if s1 != nil && s1.Pids != nil {
		u.Pids, u.PidsLimit = s1.Pids.Current, s1.Pids.Limit
	}
	return nil
}

// blkio is cgroups/blkio (the io controller on v2): weight and per-device
// bandwidth and iops limits.
type blkio struct{ *core }

func (i *blkio) Name() string { return "cgroups/blkio" }

func (i *blkio) res(r isolators.Resources) (func(*specs.LinuxResources), error) {
	var devs []struct {
		major, minor int64
		d            isolators.DeviceLimit
	}
	for _, d := range r.Devices {
		var st syscall.Stat_t
		if err := syscall.Stat(d.Path, &st); err != nil {
			return nil, errs.New(errdefs.ErrInvalidArgument, "io limit for %s: %w", d.Path, err)
		}
		if st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
			return nil, errs.New(errdefs.ErrInvalidArgument, "io limit for %s: not a block device", d.Path)
		}
		devs = append(devs, struct {
			major, minor int64
			d            isolators.DeviceLimit
		}{int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev)), d})
	}
	return func(lr *specs.LinuxResources) {
		if r.BlkioWeight == 0 && len(devs) == 0 {
			return
		}
		b := &specs.LinuxBlockIO{}
		if r.BlkioWeight > 0 {
			w := r.BlkioWeight
			b.Weight = &w
		}
		add := func(list *[]specs.LinuxThrottleDevice, major, minor int64, rate uint64) {
			if rate > 0 {
				t := specs.LinuxThrottleDevice{Rate: rate}
				t.Major, t.Minor = major, minor
				*list = append(*list, t)
			}
		}
		for _, d := range devs {
			add(&b.ThrottleReadBpsDevice, d.major, d.minor, d.d.ReadBps)
			add(&b.ThrottleWriteBpsDevice, d.major, d.minor, d.d.WriteBps)
			add(&b.ThrottleReadIOPSDevice, d.major, d.minor, d.d.ReadIops)
			add(&b.ThrottleWriteIOPSDevice, d.major, d.minor, d.d.WriteIops)
		}
		lr.BlockIO = b
	}, nil
}

func (i *blkio) Prepare(_ context.Context, c isolators.Container) ([]oci.SpecOpts, error) {
	fn, err := i.res(c.Resources)
	if err != nil {
		return nil, err
	}
	return []oci.SpecOpts{withResources(fn)}, nil
}

func (i *blkio) Update(context.Context, isolators.Container, isolators.Resources) error { return nil }

func (i *blkio) Usage(_ context.Context, c isolators.Container, u *isolators.Usage) error {
	s1, s2, err := i.stats(c.CgroupPath, "io")
	if err != nil {
		return err
	}
	if s2 != nil && s2.Io != nil {
		for _, e := range s2.Io.Usage {
			u.IOReadBytes += e.Rbytes
			u.IOWriteBytes += e.Wbytes
		}
	}
	if s1 != nil && s1.Blkio != nil {
		for _, e := range s1.Blkio.IoServiceBytesRecursive {
			switch e.Op {
			case "Read":
				u.IOReadBytes += e.Value
			case "Write":
				u.IOWriteBytes += e.Value
			}
		}
	}
	return nil
}

package containerd

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
)

// minMemory is the smallest memory limit accepted: below it the runtime
// itself does not fit.
const minMemory = 4 << 20

// cgroupPath is what the spec's cgroupsPath says: a cgroupfs path, or with
// the systemd driver runc's "slice:prefix:name".
func (z *Containerizer) cgroupPath(id containerizer.ContainerID) string {
	if z.cfg.SystemdCgroup {
		return "gearbox.slice:" + z.cfg.Namespace + ":" + string(id)
	}
	return "/" + z.cfg.Namespace + "/" + string(id)
}

// cgroupDir is where the container's cgroup is, below the hierarchy's root.
func (z *Containerizer) cgroupDir(id containerizer.ContainerID) string {
	return CgroupDir(z.cgroupPath(id))
}

// CgroupDir maps a cgroupsPath to its directory: runc's systemd driver puts
// "slice:prefix:name" at /slice/prefix-name.scope.
func CgroupDir(cgroupsPath string) string {
	parts := strings.Split(cgroupsPath, ":")
	if len(parts) != 3 {
		return cgroupsPath
	}
	return "/" + parts[0] + "/" + parts[1] + "-" + parts[2] + ".scope"
}

func (z *Containerizer) isoContainer(info containerizer.Container) isolators.Container {
	return isolators.Container{ID: string(info.ID), CgroupPath: z.cgroupDir(info.ID), Resources: info.Resources, Sandbox: info.Sandbox, Labels: info.Labels, Network: info.Network}
}

// CheckResources refuses values no isolator could honour; update says the
// values are for a running container.
func (z *Containerizer) CheckResources(r isolators.Resources, update bool) error {
	bad := func(format string, a ...any) error { return errs.New(errdefs.ErrInvalidArgument, format, a...) }
	switch {
	case math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || r.CPUs < 0:
		return bad("cpus %v: give a positive number of CPUs, such as 0.5 or 2", r.CPUs)
	case r.Memory < 0 || (r.Memory > 0 && r.Memory < minMemory):
		return bad("memory %d bytes: the smallest limit is 4 MiB", r.Memory)
	case z.cfg.HostMemory > 0 && r.Memory > z.cfg.HostMemory:
		return bad("memory %d bytes is more than this host has (%d bytes)", r.Memory, z.cfg.HostMemory)
	case r.MemorySoft < 0 || (r.Memory > 0 && r.MemorySoft > r.Memory):
		return bad("memory reservation %d bytes: it must be positive and at most the limit", r.MemorySoft)
	case r.Pids < 0:
		return bad("pids %d: give a positive number", r.Pids)
	case r.BlkioWeight != 0 && (r.BlkioWeight < 10 || r.BlkioWeight > 1000):
		return bad("blkio weight %d: give 10 to 1000", r.BlkioWeight)
	case update && len(r.Devices) > 0:
		return bad("io device limits cannot change in place: relaunch the container")
	}
	return nil
}

// limitation asks the isolators whether a limit ended the container.
func (z *Containerizer) limitation(ctx context.Context, info containerizer.Container) *isolators.Limitation {
	for _, iso := range z.cfg.Isolators {
		l, err := iso.Watch(ctx, z.isoContainer(info))
		if err != nil {
			z.log.Warn("isolator watch", "container_id", info.ID, "isolator", iso.Name(), "err", err)
			continue
		}
		if l != nil {
			return l
		}
	}
	return nil
}

func (z *Containerizer) Update(ctx context.Context, id containerizer.ContainerID, r isolators.Resources) (containerizer.Container, error) {
	c, err := z.lookup(id)
	if err != nil {
		return containerizer.Container{}, err
	}
	if err := z.CheckResources(r, true); err != nil {
		return containerizer.Container{}, err
	}
	info := c.snapshot()
	if !info.State.Running() {
		return containerizer.Container{}, errs.New(errdefs.ErrFailedPrecondition, "container %q is not running (%s): only a running container's resources change", id, info.State)
	}
	merged := info.Resources
	if r.CPUs > 0 {
		merged.CPUs = r.CPUs
	}
	if r.Memory > 0 {
		merged.Memory = r.Memory
	}
	if r.MemorySoft > 0 {
		merged.MemorySoft = r.MemorySoft
	}
	if r.Pids > 0 {
		merged.Pids = r.Pids
	}
	if err := z.CheckResources(merged, true); err != nil {
		return containerizer.Container{}, err
	}
	for _, iso := range z.cfg.Isolators {
		if err := iso.Update(ctx, z.isoContainer(info), r); err != nil {
			return containerizer.Container{}, errs.New(errdefs.ErrFailedPrecondition, "isolator %s could not update container %s: %w", iso.Name(), id, err)
		}
	}
	c.mu.Lock()
	c.info.Resources = merged
	info, cont := c.info, c.cont
	c.mu.Unlock()
	if b, err := json.Marshal(merged); err == nil && cont != nil {
		if _, err := cont.SetLabels(ctx, map[string]string{labelResources: string(b)}); err != nil {
			z.log.Warn("recording updated resources", "container_id", id, "err", err)
		}
	}
	z.changed(info, false)
	return info, nil
}

func (z *Containerizer) Usage(ctx context.Context, id containerizer.ContainerID) (isolators.Usage, error) {
	var u isolators.Usage
	c, err := z.lookup(id)
	if err != nil {
		return u, err
	}
	info := c.snapshot()
	if !info.State.Running() {
		return u, errs.New(errdefs.ErrFailedPrecondition, "container %q is not running (%s): it has no usage", id, info.State)
	}
	var errList []error
	for _, iso := range z.cfg.Isolators {
		if err := iso.Usage(ctx, z.isoContainer(info), &u); err != nil {
			errList = append(errList, err)
		}
	}
	if len(errList) == len(z.cfg.Isolators) && len(errList) > 0 {
		return u, errs.New(errdefs.ErrUnavailable, "reading the usage of container %s: %w", id, errors.Join(errList...))
	}
	return u, nil
}

// networker is the isolator that attaches containers to networks, if the
// agent has one.
func (z *Containerizer) networker() isolators.Networker {
	for _, iso := range z.cfg.Isolators {
		if n, ok := iso.(isolators.Networker); ok {
			return n
		}
	}
	return nil
}

// checkNetwork refuses a network the agent cannot give.
func (z *Containerizer) checkNetwork(n isolators.Network) error {
	nw := z.networker()
	switch {
	case nw != nil:
		return nw.Check(n)
	case n.IsHost() && len(n.PortMappings) > 0:
		return errs.New(errdefs.ErrInvalidArgument, "port mappings need a network of the container's own, and this agent has only the host network")
	case !n.IsHost():
		return errs.New(errdefs.ErrInvalidArgument, "unknown network %q: this agent has only the host network (it runs without the network/cni isolator)", n.Name)
	}
	return nil
}

// attachment records where the network isolator put a container.
func (z *Containerizer) attachment(ctx context.Context, c *ctr) {
	nw := z.networker()
	info := c.snapshot()
	if nw == nil || info.Network.IsHost() {
		return
	}
	a, ok, err := nw.Attachment(ctx, z.isoContainer(info))
	if err != nil {
		z.log.Warn("reading a container's network attachment", "container_id", info.ID, "err", err)
	}
	if ok {
		c.mu.Lock()
		c.info.IPs = a.IPs
		if a.Hostname != "" {
			c.info.Network.Hostname = a.Hostname
		}
		c.mu.Unlock()
	}
}

// detach releases a container's network attachment once it has exited, so
// that its IP and host ports can go to others.
func (z *Containerizer) detach(ctx context.Context, info containerizer.Container) {
	if nw := z.networker(); nw != nil && !info.Network.IsHost() {
		if err := nw.Detach(ctx, z.isoContainer(info)); err != nil {
			z.log.Warn("detaching a container from its network", "container_id", info.ID, "err", err)
		}
	}
}

// Package isolators holds the Isolator contract: the Mesos isolator
// lifecycle in Go. The built-in cgroups isolators live in
// isolators/cgroups.
//
//	Recover  after an agent restart, for the containers it found
//	Prepare  before the container is created: changes to its OCI spec
//	Isolate  once its process exists
//	Watch    when it has exited (before its cgroup goes): the limitation
//	         that ended it, if any
//	Update   resources of a running container, in place
//	Usage    what it uses now
//	Status   isolator-specific facts, for inspect
//	Cleanup  when it is removed; idempotent
package isolators

import (
	"context"

	"github.com/containerd/containerd/v2/pkg/oci"

	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Resources are what a container is given. Zero means "no limit".
type Resources struct {
	// CPUs is a number of CPUs (0.5, 2): proportional weight, and a hard
	// CFS limit unless the agent turns hard limits off.
	CPUs float64
	// Memory is the hard limit in bytes; MemorySoft the soft one
	// (reservation). No swap is given.
	Memory     int64
	MemorySoft int64
	// Pids limits the number of processes and threads.
	Pids int64
	// BlkioWeight is the proportional io weight, 10–1000.
	BlkioWeight uint16
	// Devices are per-device bandwidth and iops limits.
	Devices []DeviceLimit
}

// IsZero says that r asks for no limit at all.
func (r Resources) IsZero() bool {
	return r.CPUs == 0 && r.Memory == 0 && r.MemorySoft == 0 && r.Pids == 0 && r.BlkioWeight == 0 && len(r.Devices) == 0
}

// DeviceLimit limits io on one block device.
type DeviceLimit struct {
	Path                string // e.g. /dev/vda
	ReadBps, WriteBps   uint64
	ReadIops, WriteIops uint64
}

// Container is what an isolator knows of a container.
type Container struct {
	ID string
	// CgroupPath is the container's cgroup, relative to the hierarchy's
	// root (/gearbox/web).
	CgroupPath string
	Resources  Resources
	// Sandbox is the container's sandbox directory on the host.
	Sandbox string
	Labels  map[string]string
	// Network is the network it asked for; the zero value is the host's.
	Network Network
}

// Network names of the two networks that are not CNI networks.
const (
	NetworkHost = "host" // the host's network namespace
	NetworkNone = "none" // a namespace of its own with only lo
)

// Network is the network a container joins (Mesos's NetworkInfo).
type Network struct {
	// Name is host, none or a CNI network's name; "" is host.
	Name string `json:"name,omitempty"`
	// Hostname is the container's hostname off the host network.
	Hostname string `json:"hostname,omitempty"`
	// PortMappings map host ports to the container's (CNI networks only).
	PortMappings []PortMapping `json:"port_mappings,omitempty"`
}

// IsHost says that the container shares the host's network.
func (n Network) IsHost() bool { return n.Name == "" || n.Name == NetworkHost }

// PortMapping maps a host port to a container port (Mesos's
// NetworkInfo.PortMapping). HostPort 0 asks the agent to pick one.
type PortMapping struct {
	HostPort      uint16 `json:"host_port"`
	ContainerPort uint16 `json:"container_port"`
	Protocol      string `json:"protocol"` // tcp or udp
}

// Attachment is where a container is on its network.
type Attachment struct {
	Network  string
	Hostname string
	IPs      []string
}

// Networker is an isolator that attaches containers to networks (the
// network/cni isolator). The containerizer launches a container off the
// host network only through one.
type Networker interface {
	Isolator
	// Networks are the names a container may ask for besides host.
	Networks() []string
	// Check refuses a network request that cannot be met (InvalidArgument,
	// or FailedPrecondition when the host lacks a plugin), attaching
	// nothing.
	Check(n Network) error
	// Attachment is the container's place on its network, once Prepare
	// attached it; ok false when it has none.
	Attachment(ctx context.Context, c Container) (a Attachment, ok bool, err error)
	// Detach releases the container's attachment (its IP and host ports)
	// once its process has exited; Cleanup removes what is left.
	// Idempotent.
	Detach(ctx context.Context, c Container) error
}

// Limitation says which limit ended a container.
type Limitation struct {
	// Reason is a Mesos reason: REASON_CONTAINER_LIMITATION_MEMORY, …
	Reason  typesv1.Reason
	Message string
}

// Usage is what a container uses; each isolator fills its part.
type Usage struct {
	CPUUserSeconds, CPUSystemSeconds float64
	CPUThrottledPeriods              uint64
	CPUThrottledSeconds              float64
	MemoryUsage, MemoryRSS           uint64
	MemoryCache, MemoryPeak          uint64
	MemoryLimit                      uint64
	Pids, PidsLimit                  uint64
	IOReadBytes, IOWriteBytes        uint64
	DiskBytes                        uint64 // the sandbox, where an isolator measures it
}

// Isolator isolates one kind of resource.
type Isolator interface {
	// Name is how the agent's config names it (cgroups/mem, …).
	Name() string
	Recover(ctx context.Context, cs []Container) error
	Prepare(ctx context.Context, c Container) ([]oci.SpecOpts, error)
	Isolate(ctx context.Context, c Container, pid int) error
	Watch(ctx context.Context, c Container) (*Limitation, error)
	Update(ctx context.Context, c Container, r Resources) error
	Usage(ctx context.Context, c Container, u *Usage) error
	Status(ctx context.Context, c Container) (map[string]string, error)
	Cleanup(ctx context.Context, c Container) error
}

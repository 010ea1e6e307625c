// Package store is the master's registry: the agents it knows and the
// tasks it placed, with their latest states. Store is the contract; Bolt
// keeps it in an embedded bbolt file (the default), and an etcd-backed
// Store for replicated masters can follow behind the same contract
// (master/store/storetest is the suite both must pass).
//
// The registry holds what a restarted master needs to go on: which agents
// were registered (and which an operator marked gone, so that they are
// refused if they return) and every task's last known state. Health and
// partitions are judged anew after a restart, as Mesos's master does: an
// agent that does not re-register in time becomes unreachable.
package store

import (
	"context"
	"time"

	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// AgentState is an agent's standing with the master.
type AgentState string

const (
	AgentActive      AgentState = "ACTIVE"
	AgentUnreachable AgentState = "UNREACHABLE"
	// AgentGone: removed after registry_max_agent_age, or by an operator
	// (GoneByOperator); such an agent is refused if it returns.
	AgentGone AgentState = "GONE"
)

// Resources are an agent's or a task's cpus, memory and disk.
type Resources struct {
	CPUs   float64 `json:"cpus,omitempty"`
	Memory int64   `json:"memory,omitempty"` // bytes
	Disk   int64   `json:"disk,omitempty"`   // bytes
	// Ports are host ports (Mesos's ports resource): an agent's range, or
	// the host ports a task asked for by number.
	Ports []PortRange `json:"ports,omitempty"`
}

// PortRange is an inclusive range of host ports.
type PortRange struct {
	Begin uint32 `json:"begin"`
	End   uint32 `json:"end"`
}

// PortMapping is a task's host port mapped to its container's port.
type PortMapping struct {
	HostPort      uint32 `json:"host_port"`
	ContainerPort uint32 `json:"container_port"`
	Protocol      string `json:"protocol,omitempty"`
}

// Agent is one registered agent.
type Agent struct {
	ID             string            `json:"id"`
	Hostname       string            `json:"hostname"`
	Address        string            `json:"address,omitempty"`
	Version        string            `json:"version,omitempty"`
	Resources      Resources         `json:"resources"`
	Attributes     map[string]string `json:"attributes,omitempty"`
	State          AgentState        `json:"state"`
	GoneByOperator bool              `json:"gone_by_operator,omitempty"`
	// Identity is the certificate common name the agent registered with
	// (mutual TLS); another certificate may not register under its ID.
	Identity     string    `json:"identity,omitempty"`
	RegisteredAt time.Time `json:"registered_at"`
	// UnreachableAt is when the agent was marked unreachable (zero if it
	// is not): the clock of registry_max_agent_age.
	UnreachableAt time.Time `json:"unreachable_at,omitempty"`
}

// Task is one task the master placed, with its latest state.
type Task struct {
	ID        string    `json:"id"`
	AgentID   string    `json:"agent_id"`
	Image     string    `json:"image"`
	Command   []string  `json:"command,omitempty"`
	Resources Resources `json:"resources"`
	// PartitionAware tasks become TASK_UNREACHABLE when their agent does;
	// the others TASK_LOST (Mesos's PARTITION_AWARE capability).
	PartitionAware bool `json:"partition_aware,omitempty"`
	// State and Reason are kept by name ("TASK_RUNNING"), as they were
	// when they were strings, so that every master reads every registry.
	State    typesv1.TaskState `json:"state"`
	Reason   typesv1.Reason    `json:"reason,omitempty"`
	Message  string            `json:"message,omitempty"`
	ExitCode *int32            `json:"exit_code,omitempty"`
	// KillRequested: an operator asked to kill it; it is killed as soon as
	// its agent can be told.
	KillRequested bool `json:"kill_requested,omitempty"`
	// Adopted: an agent reported it and the master had not placed it; it
	// is forgotten once its agent no longer reports it.
	Adopted bool `json:"adopted,omitempty"`
	// Where its container is reachable, as its agent last reported (CNI
	// networks): its addresses and port mappings with the host ports given.
	IPAddresses  []string      `json:"ip_addresses,omitempty"`
	PortMappings []PortMapping `json:"port_mappings,omitempty"`
	CreatedAt    time.Time     `json:"created_at"`
	UpdatedAt    time.Time     `json:"updated_at"`
}

// Batch is a set of writes applied in one durable transaction: the master
// groups what changed while the previous batch was being written (group
// commit), so that a thousand agents registering at once cost a few fsyncs,
// not a thousand.
type Batch struct {
	Agents       []Agent
	Tasks        []Task
	DeleteAgents []string // absent IDs are not an error
	DeleteTasks  []string
}

// Store keeps the registry: the master reads it whole at start and
// writes it in batches afterwards, so that is all a Store does.
type Store interface {
	// Agents returns every agent, ordered by ID.
	Agents(ctx context.Context) ([]Agent, error)
	// Tasks returns every task, ordered by ID.
	Tasks(ctx context.Context) ([]Task, error)
	// Apply writes a batch atomically and durably: all of it or none.
	Apply(ctx context.Context, b Batch) error
	Close() error
}

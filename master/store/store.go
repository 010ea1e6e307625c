// Package store is the master's registry: the agents it knows and the
// tasks it placed, with their latest states. Store is the contract; Bolt
// keeps it in an embedded bbolt file (the default), and etcdstore keeps it
// in etcd for replicated masters (master/store/storetest is the suite both
// pass).
//
// The registry holds what a restarted master needs to go on: which agents
// were registered (and which an operator marked gone, so that they are
// refused if they return) and every task's last known state. Health and
// partitions are judged anew after a restart, as Mesos's master does: an
// agent that does not re-register in time becomes unreachable.
package store

import (
	"context"
	"errors"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
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
	Adopted   bool      `json:"adopted,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	// FrameworkID is the framework that launched it (empty: an operator),
	// Role the role its resources were offered in, GroupID the first task
	// of its LAUNCH_GROUP.
	FrameworkID string `json:"framework_id,omitempty"`
	Role        string `json:"role,omitempty"`
	GroupID     string `json:"group_id,omitempty"`
	// Pending are the status updates of a framework's task that the
	// framework has not acknowledged yet, oldest first: the master sends
	// the first until it is acknowledged, then the next (Mesos's
	// at-least-once, in-order rule). They are written in the same batch as
	// the state they report, so a restarted master resends them.
	Pending []Update `json:"pending,omitempty"`
	// Container is the whole container spec the task runs, as the agent
	// gets it: registry credentials included (the master needs them to
	// send; the registry file is the master's alone, and no API returns
	// them). Nil for tasks of older masters and adopted ones.
	Container *Container `json:"container,omitempty"`
	// Healthy and HealthOutput: what the task's health check last said
	// (Mesos's TaskStatus.healthy); nil without a check.
	Healthy      *bool  `json:"healthy,omitempty"`
	HealthOutput string `json:"health_output,omitempty"`
	// RestartCount and LastExit: its agent restarted its process (its
	// restart policy) so many times; how the last restarted one ended.
	RestartCount int       `json:"restart_count,omitempty"`
	LastExit     *TaskExit `json:"last_exit,omitempty"`
	// Where its container is reachable, as its agent last reported (CNI
	// networks): its addresses and port mappings with the host ports given.
	IPAddresses  []string      `json:"ip_addresses,omitempty"`
	PortMappings []PortMapping `json:"port_mappings,omitempty"`
}

// Update is a status update for a framework, kept until it acknowledges it.
type Update struct {
	UUID      string            `json:"uuid"`
	State     typesv1.TaskState `json:"state"`
	Reason    typesv1.Reason    `json:"reason,omitempty"`
	Message   string            `json:"message,omitempty"`
	ExitCode  *int32            `json:"exit_code,omitempty"`
	Timestamp time.Time         `json:"timestamp"`
}

// Framework is a registered framework (a scheduler that subscribed
// through the scheduler API). It is kept until it is torn down or its
// failover timeout passes while it is disconnected.
type Framework struct {
	ID               string        `json:"id"`
	Name             string        `json:"name"`
	User             string        `json:"user,omitempty"`
	Roles            []string      `json:"roles"`
	Principal        string        `json:"principal,omitempty"`
	FailoverTimeout  time.Duration `json:"failover_timeout"`
	PartitionAware   bool          `json:"partition_aware,omitempty"`
	TaskKillingState bool          `json:"task_killing_state,omitempty"`
	RegisteredAt     time.Time     `json:"registered_at"`
	// SuppressedRoles get no offers until the framework revives them.
	SuppressedRoles []string `json:"suppressed_roles,omitempty"`
}

// Container keeps a task's container spec in protobuf's JSON form, so
// that fields added to the spec later are kept by a master that knows them.
type Container struct {
	Spec *agentv1.LaunchContainerRequest
}

func (c *Container) MarshalJSON() ([]byte, error) {
	return protojson.MarshalOptions{UseProtoNames: true}.Marshal(c.Spec)
}

func (c *Container) UnmarshalJSON(b []byte) error {
	c.Spec = &agentv1.LaunchContainerRequest{}
	return protojson.UnmarshalOptions{DiscardUnknown: true}.Unmarshal(b, c.Spec)
}

// TaskExit is how one process of a task ended.
type TaskExit struct {
	ExitCode *int32            `json:"exit_code,omitempty"`
	State    typesv1.TaskState `json:"state"`
	Reason   typesv1.Reason    `json:"reason,omitempty"`
	Message  string            `json:"message,omitempty"`
	Time     time.Time         `json:"time"`
}

// Batch is a set of writes applied in one durable transaction: the master
// groups what changed while the previous batch was being written (group
// commit), so that a thousand agents registering at once cost a few fsyncs,
// not a thousand.
type Batch struct {
	Agents           []Agent
	Tasks            []Task
	DeleteAgents     []string // absent IDs are not an error
	DeleteTasks      []string
	Frameworks       []Framework
	DeleteFrameworks []string
	// Weights set roles' weights; a weight of 0 removes the role's entry
	// (it is back to the default, 1).
	Weights map[string]float64
}

var (
	// ErrFenced: a write was refused because the master that made it no
	// longer leads (the election key its writes are conditioned on was
	// deleted or re-created); nothing of the batch was written. A master
	// that gets it steps down at once.
	ErrFenced = errors.New("this master no longer leads: its registry writes are fenced off")
	// ErrUnavailable: the registry's store could not be reached, or (etcd)
	// has no quorum, within the call's time; the write may or may not have
	// landed, so the caller keeps its changes and writes them again.
	ErrUnavailable = errors.New("the registry is unavailable")
)

// Store keeps the registry: the master reads it whole at start and
// writes it in batches afterwards, so that is all a Store does.
//
// Reads reflect every write committed before the call. Errors wrap
// ErrFenced when a fenced write is refused, and ErrUnavailable when the
// store cannot be reached in time.
type Store interface {
	// Agents returns every agent, ordered by ID.
	Agents(ctx context.Context) ([]Agent, error)
	// Tasks returns every task, ordered by ID.
	Tasks(ctx context.Context) ([]Task, error)
	// Frameworks returns every framework, ordered by ID.
	Frameworks(ctx context.Context) ([]Framework, error)
	// Weights returns the roles' weights that were set.
	Weights(ctx context.Context) (map[string]float64, error)
	// Apply writes a batch atomically and durably: all of it or none. (An
	// etcd store splits a batch larger than one etcd transaction may be
	// into several, in order; see etcdstore.)
	Apply(ctx context.Context, b Batch) error
	Close() error
}

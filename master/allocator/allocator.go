// Package allocator is the contract of the master's resource allocator: the
// part of two-level scheduling that decides which framework is offered which
// agent's free resources (Mesos's include/mesos/allocator/allocator.hpp).
//
// The contract is plain Go: typed IDs, a small Resources value (cpus, memory,
// disk, port ranges) and the Allocator interface. It imports nothing of the
// master and no protobuf, so an implementation can be unit-tested and
// benchmarked alone. The implementation is in the subpackage hierarchical
// (hierarchical Dominant Resource Fairness, Mesos's HierarchicalDRF).
//
// # Who calls what
//
// The master owns the allocator and its loop: it calls Allocate after each
// change that can produce offers (an agent added or activated, resources
// recovered, a framework added, activated or revived, weights updated) and
// every --allocation-interval (1 s), and turns the returned Offers into offer
// events with IDs. The allocator starts no goroutine; every method is safe
// for concurrent use (one mutex; Allocate holds it for the run).
//
// An allocation is what the allocator has handed to a framework on an agent
// in a role: resources offered and not yet given back, plus resources used by
// the framework's tasks. The allocator never learns of tasks; the master tells
// it what comes back:
//   - an offer declined, or the unused part of an accepted offer:
//     Recover with the decline's refuse duration (DefaultRefuse when the
//     framework gave no filter; Mesos's Filters.refuse_seconds = 5);
//   - an offer rescinded (offer timeout, agent unreachable or gone, the
//     framework deactivated): Recover with refuse 0;
//   - a task's resources freed (terminal task): Recover with refuse 0.
//
// DeactivateAgent stops offers from an agent but keeps its allocations: the
// master rescinds the agent's outstanding offers and Recovers them itself.
// RemoveAgent and RemoveFramework drop every allocation on or of them.
//
// # Extending (next issues)
//
// The shape follows Mesos so that these land as additions, not rewrites:
//   - Quota (docs/quota.md): a Quota{Guarantee, Limit Resources} per role,
//     set by an UpdateQuota method; Allocate gains Mesos's first stage (roles
//     below their guarantee first) and stops a role at its limit. The role
//     tree of a run (hierarchical/tree.go) already sums each role's subtree
//     allocation, which is what both need (Mesos's quota of "eng" covers
//     "eng/web").
//   - Reservations (docs/reservation.md): Resources gains a Reservation role
//     ("" = unreserved, Mesos's "*"), an agent's total becomes a list of
//     Resources by reservation, and Allocate offers a role its reserved
//     resources plus the unreserved ones (offerNode, at a role's leaf, is
//     where that choice is made); a role's reservations also count toward
//     its share, as in Mesos.
//   - Persistent volumes (docs/persistent-volume.md): disk Resources gain a
//     persistence ID and container path; they are reserved resources, so they
//     ride on reservations.
//   - Maintenance (docs/maintenance.md): AgentInfo gains an Unavailability
//     (start, duration); Allocate's result gains inverse offers for frameworks
//     with allocations on an agent whose window is near, and filters apply to
//     inverse offers the same way.
//
// Hierarchical roles ("eng/web", docs/roles.md) are supported: a role's
// allocation counts toward its ancestors' shares, and a weight weighs a role
// against its siblings.
package allocator

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// AgentID names an agent (the master's agent ID).
type AgentID string

// FrameworkID names a framework (the master's framework ID).
type FrameworkID string

// DefaultRole is the role of frameworks that name none (Mesos's "*").
const DefaultRole = "*"

// DefaultRefuse is how long a declined offer's resources are not offered to
// the same framework on the same agent in the same role when the framework
// gave no filter (Mesos's Filters.refuse_seconds default).
const DefaultRefuse = 5 * time.Second

// MaxRefuse caps a refuse filter (Mesos caps refuse_seconds at a year).
const MaxRefuse = 365 * 24 * time.Hour

// Errors, tested with errors.Is; the master turns them into gRPC codes.
var (
	ErrUnknownAgent     = errors.New("unknown agent")             // NotFound
	ErrUnknownFramework = errors.New("unknown framework")         // NotFound
	ErrExists           = errors.New("already exists")            // AlreadyExists
	ErrInvalid          = errors.New("invalid argument")          // InvalidArgument
	ErrNotAllocated     = errors.New("resources not allocated")   // FailedPrecondition
	ErrInsufficient     = errors.New("not enough free resources") // ResourceExhausted / FailedPrecondition
)

// AgentInfo is what the allocator knows of an agent.
type AgentInfo struct {
	Hostname   string
	Attributes map[string]string
	// Total is everything the agent offers to frameworks (its reported
	// resources, with ports where it reports them).
	Total Resources
}

// FrameworkInfo is what the allocator knows of a framework.
type FrameworkInfo struct {
	// Roles the framework is subscribed to; empty means DefaultRole.
	Roles []string
	// SuppressedRoles are roles (of Roles) for which it wants no offers now
	// (Mesos's suppressed_roles on SUBSCRIBE and UPDATE_FRAMEWORK).
	SuppressedRoles []string
}

// Allocation is resources of an agent allocated to a framework in a role.
type Allocation struct {
	Framework FrameworkID
	Agent     AgentID
	Role      string
	Resources Resources
}

// Offer is one offer to make: all of an agent's free resources for a role,
// to one framework. The master gives it an ID and sends it; until it is
// accepted, declined or rescinded the resources stay allocated.
type Offer = Allocation

// RoleInfo is the operator's view of a role (Mesos's GET_ROLES).
type RoleInfo struct {
	Name       string
	Weight     float64
	Frameworks []FrameworkID // subscribed, sorted
	Allocated  Resources     // offered or used, all frameworks
}

// Allocator hands agents' free resources to frameworks as offers.
// Methods that name an unknown agent or framework return an error wrapping
// ErrUnknownAgent or ErrUnknownFramework and change nothing.
type Allocator interface {
	// AddAgent adds an agent. used is what tasks already running on it hold
	// (an agent re-registering after a master failover); entries of
	// frameworks not added yet still count against the agent's free
	// resources and are credited to the framework when it is added.
	AddAgent(id AgentID, info AgentInfo, used []Allocation) error
	// UpdateAgent replaces an agent's info (e.g. new total resources).
	UpdateAgent(id AgentID, info AgentInfo) error
	// RemoveAgent drops an agent and every allocation on it.
	RemoveAgent(id AgentID) error
	// ActivateAgent makes an agent's resources offerable again.
	ActivateAgent(id AgentID) error
	// DeactivateAgent stops offers of an agent (unreachable); its
	// allocations stay until the master Recovers or removes them.
	DeactivateAgent(id AgentID) error

	// AddFramework adds a framework. used is its allocations on agents
	// already added (entries on unknown agents are ignored: AddAgent reports
	// them); an entry for an agent and role the agent reported replaces it.
	AddFramework(id FrameworkID, info FrameworkInfo, used []Allocation, active bool) error
	// UpdateFramework replaces a framework's roles and suppressed roles.
	// Allocations in roles it leaves stay (and count) until recovered.
	UpdateFramework(id FrameworkID, info FrameworkInfo) error
	// RemoveFramework drops a framework, frees all its allocations and
	// forgets its filters.
	RemoveFramework(id FrameworkID) error
	// ActivateFramework lets a framework receive offers again.
	ActivateFramework(id FrameworkID) error
	// DeactivateFramework stops offers to a framework (disconnected, in
	// failover) and clears its filters; its allocations still count.
	DeactivateFramework(id FrameworkID) error

	// Recover gives back resources allocated to a framework on an agent in
	// a role (declined, unused, rescinded or freed). If refuse > 0, those
	// resources are not offered to that framework on that agent in that role
	// again until refuse has passed (capped at MaxRefuse), unless more than
	// them is free, or the framework revives.
	Recover(fw FrameworkID, agent AgentID, role string, res Resources, refuse time.Duration) error
	// Claim allocates res, which must be free on the agent now, to a
	// framework in a role without an offer: the operator's `task launch`
	// placing a task on an agent it chose goes through the allocator this
	// way (as the built-in framework), so it never double-books an agent
	// with frameworks' offers. Errors wrap ErrInsufficient when the agent's
	// free resources do not hold res. The master Recovers res when the task
	// ends, as for any task.
	Claim(fw FrameworkID, agent AgentID, role string, res Resources) error
	// SuppressOffers stops offers to a framework in roles (all of its roles
	// if none given) until ReviveOffers.
	SuppressOffers(fw FrameworkID, roles []string) error
	// ReviveOffers lifts suppression and clears refuse filters for a
	// framework in roles (all of its roles if none given).
	ReviveOffers(fw FrameworkID, roles []string) error

	// UpdateWeights sets roles' weights (> 0); roles not named keep theirs.
	// A role never given a weight has weight 1.
	UpdateWeights(weights map[string]float64) error
	// Weights returns the weights set by UpdateWeights.
	Weights() map[string]float64
	// Roles lists known roles (with a framework, an allocation or a weight),
	// sorted by name.
	Roles() []RoleInfo

	// Allocate runs one allocation and returns the offers to make, sorted by
	// agent, then role. Each offer's resources are allocated to its framework
	// until Recovered.
	Allocate() []Offer
}

// ValidateRole checks a role name as Mesos does (docs/roles.md): DefaultRole
// "*", or one or more '/'-separated parts, each non-empty, not "." or "..",
// not starting with '-', without whitespace, '\\' or '*'.
func ValidateRole(role string) error {
	if role == DefaultRole {
		return nil
	}
	if role == "" {
		return fmt.Errorf("%w: role: must not be empty", ErrInvalid)
	}
	for part := range strings.SplitSeq(role, "/") {
		switch {
		case part == "":
			return fmt.Errorf("%w: role %q: empty part (leading, trailing or double '/')", ErrInvalid, role)
		case part == "." || part == "..":
			return fmt.Errorf("%w: role %q: a part must not be %q", ErrInvalid, role, part)
		case part[0] == '-':
			return fmt.Errorf("%w: role %q: a part must not start with '-'", ErrInvalid, role)
		case strings.ContainsAny(part, " \t\n\v\f\r\\*"):
			return fmt.Errorf("%w: role %q: must not contain whitespace, '\\' or '*'", ErrInvalid, role)
		}
	}
	return nil
}

package hierarchical

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/master/allocator"
)

type clock struct{ t time.Time }

func (c *clock) Now() time.Time          { return c.t }
func (c *clock) Advance(d time.Duration) { c.t = c.t.Add(d) }

func newTest(t *testing.T) (*Allocator, *clock) {
	t.Helper()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	return New(Config{Now: c.Now}), c
}

const gib = 1 << 30

func res(cpus float64, memGiB int64) allocator.Resources {
	return allocator.Resources{CPUs: cpus, MemoryBytes: memGiB * gib}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func addAgents(t *testing.T, a *Allocator, n int, total allocator.Resources) {
	t.Helper()
	for i := range n {
		must(t, a.AddAgent(allocator.AgentID(fmt.Sprintf("agent-%03d", i)), allocator.AgentInfo{Total: total}, nil))
	}
}

func addFramework(t *testing.T, a *Allocator, id allocator.FrameworkID, roles ...string) {
	t.Helper()
	must(t, a.AddFramework(id, allocator.FrameworkInfo{Roles: roles}, nil, true))
}

// one runs an allocation and expects exactly one offer.
func one(t *testing.T, a *Allocator) allocator.Offer {
	t.Helper()
	offers := a.Allocate()
	if len(offers) != 1 {
		t.Fatalf("got %d offers %+v, want 1", len(offers), offers)
	}
	return offers[0]
}

func none(t *testing.T, a *Allocator) {
	t.Helper()
	if offers := a.Allocate(); len(offers) != 0 {
		t.Fatalf("got offers %+v, want none", offers)
	}
}

func decline(t *testing.T, a *Allocator, o allocator.Offer, refuse time.Duration) {
	t.Helper()
	must(t, a.Recover(o.Framework, o.Agent, o.Role, o.Resources, refuse))
}

func TestOfferAllFreeResourcesOfAnAgent(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 3, res(4, 8))
	addFramework(t, a, "fw1", "web")
	offers := a.Allocate()
	if len(offers) != 3 {
		t.Fatalf("got %d offers, want one per agent: %+v", len(offers), offers)
	}
	for i, o := range offers {
		want := allocator.AgentID(fmt.Sprintf("agent-%03d", i))
		if o.Agent != want || o.Framework != "fw1" || o.Role != "web" || !o.Resources.Equal(res(4, 8)) {
			t.Errorf("offer %d = %+v, want all of %s to fw1 in web", i, o, want)
		}
	}
	none(t, a) // everything is allocated until recovered
	decline(t, a, offers[1], 0)
	if o := one(t, a); o.Agent != "agent-001" {
		t.Fatalf("recovered agent-001, offered %s", o.Agent)
	}
}

func TestRefuseFilter(t *testing.T) {
	a, c := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	addFramework(t, a, "fw2", "web")

	o := one(t, a)
	if o.Framework != "fw1" {
		t.Fatalf("first offer to %s, want fw1 (tie broken by name)", o.Framework)
	}
	decline(t, a, o, 10*time.Second)
	for range 3 { // offered to the other framework meanwhile, again and again
		o = one(t, a)
		if o.Framework != "fw2" {
			t.Fatalf("while fw1's filter holds, offered to %s, want fw2", o.Framework)
		}
		decline(t, a, o, 0)
		c.Advance(3 * time.Second)
	}
	c.Advance(time.Second) // 10 s after the decline
	if o = one(t, a); o.Framework != "fw1" {
		t.Fatalf("after refuse_seconds, offered to %s, want fw1 again", o.Framework)
	}
}

func TestRefuseFilterExpiryAlone(t *testing.T) {
	a, c := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	decline(t, a, one(t, a), allocator.DefaultRefuse)
	none(t, a)
	c.Advance(allocator.DefaultRefuse - time.Millisecond)
	none(t, a)
	c.Advance(time.Millisecond)
	one(t, a)
}

func TestRefuseFilterDoesNotCoverMoreResources(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	o := one(t, a)
	// fw1 launches a task of 2 cpus, 4 GiB and declines the rest for a minute.
	must(t, a.Recover("fw1", o.Agent, "web", res(2, 4), time.Minute))
	none(t, a)
	// The task ends: 4 cpus are free, more than was refused.
	must(t, a.Recover("fw1", o.Agent, "web", res(2, 4), 0))
	if o = one(t, a); !o.Resources.Equal(res(4, 8)) {
		t.Fatalf("offer %s, want all 4 cpus", o.Resources)
	}
}

func TestSuppressRevive(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web", "batch")
	must(t, a.SuppressOffers("fw1", nil))
	none(t, a)
	must(t, a.ReviveOffers("fw1", []string{"batch"}))
	if o := one(t, a); o.Role != "batch" {
		t.Fatalf("revived batch only, offered in %s", o.Role)
	}
	must(t, a.RemoveAgent("agent-000"))
	addAgents(t, a, 1, res(4, 8))

	// Revive clears refuse filters of the role.
	must(t, a.SuppressOffers("fw1", []string{"batch"}))
	must(t, a.ReviveOffers("fw1", []string{"web"}))
	decline(t, a, one(t, a), time.Hour)
	none(t, a)
	must(t, a.ReviveOffers("fw1", []string{"web"}))
	one(t, a)
	if err := a.SuppressOffers("fw1", []string{"other"}); !errors.Is(err, allocator.ErrInvalid) {
		t.Fatalf("suppress a role not subscribed: %v, want ErrInvalid", err)
	}
}

func TestSuppressedRolesOnAdd(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	must(t, a.AddFramework("fw1", allocator.FrameworkInfo{Roles: []string{"web"}, SuppressedRoles: []string{"web"}}, nil, true))
	none(t, a)
	must(t, a.UpdateFramework("fw1", allocator.FrameworkInfo{Roles: []string{"web"}}))
	one(t, a)
}

func TestInactiveAgentMakesNoOffers(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 2, res(4, 8))
	addFramework(t, a, "fw1", "web")
	must(t, a.DeactivateAgent("agent-000"))
	if o := one(t, a); o.Agent != "agent-001" {
		t.Fatalf("offered %s, want only the active agent-001", o.Agent)
	}
	must(t, a.ActivateAgent("agent-000"))
	if o := one(t, a); o.Agent != "agent-000" {
		t.Fatalf("offered %s after activation, want agent-000", o.Agent)
	}
}

func TestInactiveFrameworkGetsNoOffers(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 2, res(4, 8))
	addFramework(t, a, "fw1", "web")
	addFramework(t, a, "fw2", "web")
	o := one2(t, a)
	must(t, a.DeactivateFramework("fw1"))
	if r := a.Roles()[0]; !r.Allocated.Equal(res(8, 16)) {
		t.Fatalf("role web allocated %s, want both agents (inactive fw1 still holds one)", r.Allocated)
	}
	decline(t, a, o["fw1"], 0)
	// fw1 has the lower share now, but it is inactive.
	if got := one(t, a); got.Framework != "fw2" || got.Agent != o["fw1"].Agent {
		t.Fatalf("offered %+v, want fw1's agent to fw2 (fw1 is inactive)", got)
	}
	must(t, a.ActivateFramework("fw1"))
	decline(t, a, allocator.Offer{Framework: "fw2", Agent: o["fw1"].Agent, Role: "web", Resources: res(4, 8)}, 0)
	got := one(t, a)
	if got.Framework != "fw1" {
		t.Fatalf("offered to %s, want fw1 (active again, lower share)", got.Framework)
	}
	decline(t, a, got, time.Hour)
	if got := one(t, a); got.Framework != "fw2" {
		t.Fatalf("offered to %s, want fw2 (fw1 refused for an hour)", got.Framework)
	}
	decline(t, a, allocator.Offer{Framework: "fw2", Agent: o["fw1"].Agent, Role: "web", Resources: res(4, 8)}, 0)
	// Deactivation clears a framework's filters, as in Mesos.
	must(t, a.DeactivateFramework("fw1"))
	must(t, a.ActivateFramework("fw1"))
	if got := one(t, a); got.Framework != "fw1" {
		t.Fatalf("offered to %s, want fw1 (its filter went with its deactivation)", got.Framework)
	}
}

// one2 runs an allocation with two frameworks and two agents and returns
// the offer of each framework.
func one2(t *testing.T, a *Allocator) map[allocator.FrameworkID]allocator.Offer {
	t.Helper()
	offers := a.Allocate()
	m := map[allocator.FrameworkID]allocator.Offer{}
	for _, o := range offers {
		m[o.Framework] = o
	}
	if len(offers) != 2 || len(m) != 2 {
		t.Fatalf("want one offer to each framework, got %+v", offers)
	}
	return m
}

func TestRemoveFrameworkFreesItsAllocation(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	o := one(t, a)
	must(t, a.Recover("fw1", o.Agent, "web", res(1, 1), 0)) // fw1 keeps 3 cpus, 7 GiB
	addFramework(t, a, "fw2", "web")
	decline(t, a, one(t, a), time.Hour)
	must(t, a.RemoveFramework("fw1"))
	if got := one(t, a); got.Framework != "fw2" || !got.Resources.Equal(res(4, 8)) {
		// fw2's filter covers the 1 cpu it declined; fw1's 3 cpus make more.
		t.Fatalf("after removing fw1 offered %+v, want the whole agent to fw2", got)
	}
	for _, r := range a.Roles() {
		for _, f := range r.Frameworks {
			if f == "fw1" {
				t.Fatalf("role %s still lists removed fw1", r.Name)
			}
		}
	}
	if err := a.Recover("fw1", o.Agent, "web", res(1, 1), 0); !errors.Is(err, allocator.ErrNotAllocated) {
		t.Fatalf("recover of a removed framework: %v, want ErrNotAllocated", err)
	}
}

func TestRemoveAgentDropsItsAllocations(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 2, res(4, 8))
	addFramework(t, a, "fw1", "web")
	if n := len(a.Allocate()); n != 2 {
		t.Fatalf("%d offers, want 2", n)
	}
	must(t, a.RemoveAgent("agent-000"))
	if r := a.Roles()[0]; !r.Allocated.Equal(res(4, 8)) {
		t.Fatalf("role allocated %s after removing an agent, want one agent's", r.Allocated)
	}
	if err := a.Recover("fw1", "agent-000", "web", res(4, 8), 0); !errors.Is(err, allocator.ErrUnknownAgent) {
		t.Fatalf("recover on a removed agent: %v, want ErrUnknownAgent", err)
	}
}

func TestPorts(t *testing.T) {
	a, _ := newTest(t)
	total := res(4, 8)
	total.Ports = allocator.NewRanges(allocator.Range{Begin: 31000, End: 32000})
	must(t, a.AddAgent("agent-000", allocator.AgentInfo{Total: total}, nil))
	addFramework(t, a, "fw1", "web")
	o := one(t, a)
	if !o.Resources.Ports.Contains(total.Ports) {
		t.Fatalf("offer ports %s, want %s", o.Resources.Ports, total.Ports)
	}
	task := allocator.Resources{CPUs: 1, MemoryBytes: gib, Ports: allocator.NewRanges(allocator.Range{Begin: 31000, End: 31009})}
	must(t, a.Recover("fw1", o.Agent, "web", o.Resources.Subtract(task), 0))
	o = one(t, a)
	want := allocator.NewRanges(allocator.Range{Begin: 31010, End: 32000})
	if !o.Resources.Ports.Contains(want) || !want.Contains(o.Resources.Ports) {
		t.Fatalf("offer ports %s while a task holds 31000-31009, want %s", o.Resources.Ports, want)
	}
	must(t, a.Recover("fw1", o.Agent, "web", o.Resources, 0))
	must(t, a.Recover("fw1", o.Agent, "web", task, 0)) // the task ends
	if o = one(t, a); !o.Resources.Equal(total) {
		t.Fatalf("offer %s after all came back, want %s", o.Resources, total)
	}
	// Recovering ports the framework does not hold is refused.
	bad := allocator.Resources{Ports: allocator.NewRanges(allocator.Range{Begin: 80, End: 80})}
	if err := a.Recover("fw1", o.Agent, "web", bad, 0); !errors.Is(err, allocator.ErrNotAllocated) {
		t.Fatalf("recover of port 80: %v, want ErrNotAllocated", err)
	}
}

func TestMinAllocatable(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	o := one(t, a)
	// Leave 0.005 cpus and 16 MiB free: below cpus:0.01|mem:32, not offered.
	must(t, a.Recover("fw1", o.Agent, "web", allocator.Resources{CPUs: 0.005, MemoryBytes: 16 << 20}, 0))
	none(t, a)
}

func TestUsedResourcesOnFailover(t *testing.T) {
	a, _ := newTest(t)
	// A master failover: the agent reports fw1's task before fw1 re-subscribes.
	used := []allocator.Allocation{{Framework: "fw1", Role: "web", Resources: res(3, 6)}}
	must(t, a.AddAgent("agent-000", allocator.AgentInfo{Total: res(4, 8)}, used))
	addFramework(t, a, "fw2", "web")
	if o := one(t, a); !o.Resources.Equal(res(1, 2)) {
		t.Fatalf("offered %s, want what fw1's task leaves (1 cpu, 2 GiB)", o.Resources)
	}
	used[0].Agent = "agent-000"
	must(t, a.AddFramework("fw1", allocator.FrameworkInfo{Roles: []string{"web"}}, used, true))
	if r := a.Roles()[0]; !r.Allocated.Equal(res(4, 8)) {
		t.Fatalf("role allocated %s, want 4 cpus, 8 GiB (fw1's used counted once)", r.Allocated)
	}
	none(t, a)
	must(t, a.Recover("fw1", "agent-000", "web", res(3, 6), 0))
	if o := one(t, a); !o.Resources.Equal(res(3, 6)) || o.Framework != "fw1" {
		t.Fatalf("offered %+v, want fw1's freed 3 cpus to fw1 (lower share than fw2)", o)
	}
}

func TestErrors(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"duplicate agent", a.AddAgent("agent-000", allocator.AgentInfo{}, nil), allocator.ErrExists},
		{"duplicate framework", a.AddFramework("fw1", allocator.FrameworkInfo{}, nil, true), allocator.ErrExists},
		{"unknown agent", a.DeactivateAgent("nope"), allocator.ErrUnknownAgent},
		{"unknown framework", a.ReviveOffers("nope", nil), allocator.ErrUnknownFramework},
		{"bad role", a.AddFramework("fw2", allocator.FrameworkInfo{Roles: []string{"a//b"}}, nil, true), allocator.ErrInvalid},
		{"negative cpus", a.AddAgent("agent-x", allocator.AgentInfo{Total: allocator.Resources{CPUs: -1}}, nil), allocator.ErrInvalid},
		{"zero weight", a.UpdateWeights(map[string]float64{"web": 0}), allocator.ErrInvalid},
		{"not allocated", a.Recover("fw1", "agent-000", "web", res(1, 1), 0), allocator.ErrNotAllocated},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, c.err, c.want)
		}
	}
	if _, err := a.framework("fw2"); err == nil {
		t.Error("a framework refused for a bad role was added")
	}
}

func TestObserveRunAndRoles(t *testing.T) {
	var runs []time.Duration
	a := New(Config{ObserveRun: func(d time.Duration) { runs = append(runs, d) }})
	must(t, a.UpdateWeights(map[string]float64{"idle": 2}))
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	addFramework(t, a, "fw2", "web", "batch")
	a.Allocate()
	a.Allocate()
	if len(runs) != 2 {
		t.Fatalf("ObserveRun called %d times for 2 runs", len(runs))
	}
	got := a.Roles()
	want := []allocator.RoleInfo{
		// Both roles at share 0: the tie goes to the smaller name.
		{Name: "batch", Weight: 1, Frameworks: []allocator.FrameworkID{"fw2"}, Allocated: res(4, 8)},
		{Name: "idle", Weight: 2},
		{Name: "web", Weight: 1, Frameworks: []allocator.FrameworkID{"fw1", "fw2"}},
	}
	if len(got) != len(want) {
		t.Fatalf("Roles() = %+v, want %+v", got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.Weight != w.Weight || fmt.Sprint(g.Frameworks) != fmt.Sprint(w.Frameworks) || !g.Allocated.Equal(w.Allocated) {
			t.Errorf("Roles()[%d] = %+v, want %+v", i, g, w)
		}
	}
}

func TestClaim(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "operator", "*")
	addFramework(t, a, "fw1", "web")
	must(t, a.Claim("operator", "agent-000", "*", res(1, 2)))
	o := one(t, a)
	if o.Framework != "fw1" || !o.Resources.Equal(res(3, 6)) {
		t.Fatalf("offer %+v, want what the claim left (3 cpus, 6 GiB) to fw1", o)
	}
	// Everything is offered: a claim cannot double-book it.
	if err := a.Claim("operator", "agent-000", "*", res(1, 1)); !errors.Is(err, allocator.ErrInsufficient) {
		t.Fatalf("claim on a fully offered agent: %v, want ErrInsufficient", err)
	}
	decline(t, a, o, time.Hour)
	must(t, a.Claim("operator", "agent-000", "*", res(3, 6)))
	none(t, a)
	must(t, a.Recover("operator", "agent-000", "*", res(4, 8), 0)) // both tasks end
	if o = one(t, a); !o.Resources.Equal(res(4, 8)) {
		t.Fatalf("offer %s after the operator's tasks ended, want the whole agent", o.Resources)
	}
	if err := a.Claim("nope", "agent-000", "*", res(1, 1)); !errors.Is(err, allocator.ErrUnknownFramework) {
		t.Fatalf("claim by an unknown framework: %v", err)
	}
}

func TestUpdateFrameworkRoles(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 2, res(4, 8))
	addFramework(t, a, "fw1", "web")
	o := one2or(t, a, "web")
	must(t, a.UpdateFramework("fw1", allocator.FrameworkInfo{Roles: []string{"batch"}}))
	// The allocation in web stays, and counts, until recovered.
	roles := map[string]allocator.RoleInfo{}
	for _, r := range a.Roles() {
		roles[r.Name] = r
	}
	if !roles["web"].Allocated.Equal(res(8, 16)) || len(roles["web"].Frameworks) != 0 {
		t.Fatalf("web after fw1 left it: %+v, want its allocation kept and no subscriber", roles["web"])
	}
	decline(t, a, o, 0)
	if got := one(t, a); got.Role != "batch" {
		t.Fatalf("offered in %s, want batch (fw1's only role now)", got.Role)
	}
	if err := a.Recover("fw1", o.Agent, "web", res(4, 8), 0); !errors.Is(err, allocator.ErrNotAllocated) {
		t.Fatalf("second recover: %v, want ErrNotAllocated", err)
	}
}

// one2or allocates and returns the first offer, checking all are in role.
func one2or(t *testing.T, a *Allocator, role string) allocator.Offer {
	t.Helper()
	offers := a.Allocate()
	if len(offers) == 0 {
		t.Fatal("no offers")
	}
	for _, o := range offers {
		if o.Role != role {
			t.Fatalf("offer %+v, want role %s", o, role)
		}
	}
	return offers[0]
}

func TestUpdateAgentTotal(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(4, 8))
	addFramework(t, a, "fw1", "web")
	o := one(t, a)
	must(t, a.Recover("fw1", o.Agent, "web", res(2, 4), 0)) // a task holds 2 cpus, 4 GiB
	must(t, a.UpdateAgent(o.Agent, allocator.AgentInfo{Total: res(8, 16)}))
	if got := one(t, a); !got.Resources.Equal(res(6, 12)) {
		t.Fatalf("offer %s after the agent grew to 8 cpus, want 6 cpus, 12 GiB", got.Resources)
	}
}

// The master calls the allocator from many goroutines.
func TestConcurrentUse(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 20, res(4, 8))
	for i := range 4 {
		addFramework(t, a, allocator.FrameworkID(fmt.Sprintf("fw%d", i)), "web")
	}
	done := make(chan error)
	for g := range 4 {
		go func() {
			var err error
			for i := range 50 {
				for _, o := range a.Allocate() {
					if e := a.Recover(o.Framework, o.Agent, o.Role, o.Resources, time.Duration(i%2)*time.Second); e != nil {
						err = e
					}
				}
				a.ReviveOffers(allocator.FrameworkID(fmt.Sprintf("fw%d", g)), nil)
				a.Roles()
			}
			done <- err
		}()
	}
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	for _, r := range a.Roles() {
		if !r.Allocated.Empty() {
			t.Fatalf("role %s holds %s after every offer came back", r.Name, r.Allocated)
		}
	}
}

// The master's side of an agent that becomes unreachable: it deactivates the
// agent, rescinds the agent's outstanding offers and recovers them (refuse
// 0); nothing of the agent is offered until it is active again, and tasks
// still running there keep their allocation.
func TestUnreachableAgentRescind(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 2, res(4, 8))
	addFramework(t, a, "fw1", "web")
	offers := a.Allocate()
	task := res(1, 1) // fw1 launched a task on agent-000 from its offer
	must(t, a.Recover("fw1", "agent-000", "web", offers[0].Resources.Subtract(task), 0))
	offers = append(offers[1:], one(t, a)) // what is left of agent-000, offered again
	must(t, a.DeactivateAgent("agent-000"))
	for _, o := range offers {
		if o.Agent == "agent-000" {
			decline(t, a, o, 0) // rescinded
		}
	}
	none(t, a)
	if r := a.Roles()[0]; !r.Allocated.Equal(res(5, 9)) {
		t.Fatalf("role allocated %s, want agent-001's offer and the task (5 cpus, 9 GiB)", r.Allocated)
	}
	must(t, a.ActivateAgent("agent-000"))
	if o := one(t, a); o.Agent != "agent-000" || !o.Resources.Equal(res(3, 7)) {
		t.Fatalf("offer %+v after the agent came back, want agent-000's 3 cpus, 7 GiB", o)
	}
}

// A framework in two roles is offered in each, by each role's share.
func TestFrameworkInTwoRoles(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 4, res(4, 8))
	addFramework(t, a, "fw1", "a", "b")
	byRole := map[string]int{}
	for _, o := range a.Allocate() {
		byRole[o.Role]++
	}
	if byRole["a"] != 2 || byRole["b"] != 2 {
		t.Fatalf("offers by role %v, want 2 in a and 2 in b", byRole)
	}
	must(t, a.SuppressOffers("fw1", []string{"a"}))
	for _, o := range offersOf(t, a) {
		decline(t, a, o, 0)
	}
	for _, o := range a.Allocate() {
		if o.Role != "b" {
			t.Fatalf("offer in %s while a is suppressed", o.Role)
		}
	}
}

// offersOf returns everything allocated, as offers, by agent and role.
func offersOf(t *testing.T, a *Allocator) []allocator.Offer {
	t.Helper()
	var out []allocator.Offer
	for _, ag := range a.sortedAgents() {
		for _, x := range ag.allocs {
			out = append(out, allocator.Offer{Framework: x.key.fw, Agent: ag.id, Role: x.key.role, Resources: x.res})
		}
	}
	return out
}

package hierarchical

import (
	"fmt"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/master/allocator"
)

// FuzzAllocator runs random sequences of calls, valid and not, and checks
// after each that the allocator never panics and its books balance: an
// agent's allocated is the sum of its allocations and within its total, the
// sorters hold exactly the known frameworks' allocations, and offers go only
// to active frameworks in roles they subscribe to and do not suppress.
func FuzzAllocator(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13})
	f.Add([]byte{1, 0, 1, 1, 1, 2, 2, 0, 7, 0, 7, 1, 3, 0, 2, 1, 9, 0, 11, 2})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := &clock{t: time.Unix(0, 0)}
		a := New(Config{Now: c.Now})
		roles := []string{"a", "b", "a/x", "*"}
		fws := []allocator.FrameworkID{"f0", "f1", "f2"}
		var held []allocator.Offer
		for i := 0; i+1 < len(ops); i += 2 {
			op, arg := ops[i]%14, int(ops[i+1])
			ag := allocator.AgentID(fmt.Sprintf("ag%d", arg%3))
			fw := fws[arg%3]
			role := roles[arg%4]
			switch op {
			case 0:
				total := res(float64(1+arg%4), int64(1+arg%3))
				total.Ports = allocator.NewRanges(allocator.Range{Begin: 100, End: uint64(100 + arg%7)})
				a.AddAgent(ag, allocator.AgentInfo{Total: total}, nil)
			case 1:
				a.AddFramework(fw, allocator.FrameworkInfo{Roles: []string{role, roles[(arg/4)%4]}}, nil, arg%5 != 0)
			case 2, 3:
				for _, o := range a.Allocate() {
					checkOffer(t, a, o)
					held = append(held, o)
				}
			case 4:
				if len(held) > 0 {
					o := held[arg%len(held)]
					held = removeOffer(held, arg%len(held))
					part := o.Resources
					if arg%2 == 0 { // give back a part
						part = allocator.Resources{CPUs: o.Resources.CPUs / 2, MemoryBytes: o.Resources.MemoryBytes}
						o.Resources = o.Resources.Subtract(part)
						held = append(held, o)
					}
					if err := a.Recover(o.Framework, o.Agent, o.Role, part, time.Duration(arg%3)*time.Second); err != nil {
						t.Fatalf("recover of held %+v: %v", o, err)
					}
				}
			case 5:
				if a.RemoveAgent(ag) == nil {
					held = dropOffers(held, func(o allocator.Offer) bool { return o.Agent == ag })
				}
			case 6:
				if a.RemoveFramework(fw) == nil {
					held = dropOffers(held, func(o allocator.Offer) bool { return o.Framework == fw })
				}
			case 7:
				a.SuppressOffers(fw, nil)
			case 8:
				a.ReviveOffers(fw, []string{role})
			case 9:
				a.DeactivateAgent(ag)
				a.ActivateFramework(fw)
			case 10:
				a.ActivateAgent(ag)
				a.DeactivateFramework(fw)
			case 11:
				a.UpdateWeights(map[string]float64{role: float64(arg%5) / 2})
			case 12:
				a.UpdateFramework(fw, allocator.FrameworkInfo{Roles: []string{role}})
			case 13:
				c.Advance(time.Duration(arg) * 100 * time.Millisecond)
				a.Claim(fw, ag, role, res(0.5, 0))
			}
			checkBooks(t, a)
		}
	})
}

func removeOffer(s []allocator.Offer, i int) []allocator.Offer {
	return append(s[:i:i], s[i+1:]...)
}

func dropOffers(s []allocator.Offer, drop func(allocator.Offer) bool) []allocator.Offer {
	var kept []allocator.Offer
	for _, o := range s {
		if !drop(o) {
			kept = append(kept, o)
		}
	}
	return kept
}

func checkOffer(t *testing.T, a *Allocator, o allocator.Offer) {
	fw := a.frameworks[o.Framework]
	if fw == nil || !fw.active || !fw.roles[o.Role] || fw.suppressed[o.Role] {
		t.Fatalf("offer %+v to a framework that may not get it (%+v)", o, fw)
	}
	if ag := a.agents[o.Agent]; ag == nil || !ag.active {
		t.Fatalf("offer %+v of an inactive or unknown agent", o)
	}
}

func checkBooks(t *testing.T, a *Allocator) {
	sorter := map[allocKey]scalars{}
	for _, ag := range a.agents {
		var sum allocator.Resources
		for _, x := range ag.allocs {
			if x.res.Empty() {
				t.Fatalf("agent %s keeps an empty allocation %+v", ag.id, x.key)
			}
			sum = sum.Add(x.res)
			if _, ok := a.byFramework[x.key.fw][ag]; !ok {
				t.Fatalf("agent %s holds %+v but byFramework does not list it", ag.id, x.key)
			}
			if a.frameworks[x.key.fw] != nil {
				sorter[x.key] = sorter[x.key].add(scalarsOf(x.res))
			}
		}
		if !sum.Equal(ag.allocated) {
			t.Fatalf("agent %s allocated %s, its allocations sum to %s", ag.id, ag.allocated, sum)
		}
		if !ag.info.Total.Contains(ag.allocated) {
			t.Fatalf("agent %s allocated %s beyond its total %s", ag.id, ag.allocated, ag.info.Total)
		}
	}
	for name, r := range a.roles {
		var sum scalars
		for id, c := range r.clients {
			want := sorter[allocKey{id, name}]
			if c.alloc != want {
				t.Fatalf("sorter: %s in %s holds %+v, agents say %+v", id, name, c.alloc, want)
			}
			sum = sum.add(c.alloc)
			delete(sorter, allocKey{id, name})
		}
		if r.alloc != sum {
			t.Fatalf("role %s alloc %+v, its frameworks' sum %+v", name, r.alloc, sum)
		}
	}
	for k, s := range sorter {
		t.Fatalf("allocation %+v (%+v) of a known framework missing from the sorters", k, s)
	}
}

package hierarchical

import (
	"fmt"
	"testing"

	"github.com/gearboxd/gearbox/master/allocator"
)

// sim runs frameworks with saturating work: each accepts every offer by
// launching as many tasks of its shape as fit, declines the rest (refuse 0),
// and each task ends a few steps after it starts.
type sim struct {
	t     *testing.T
	a     *Allocator
	shape map[allocator.FrameworkID]allocator.Resources
	tasks []simTask
	step  int
	n     int
	// perOffer caps the tasks launched from one offer (0: as many as fit).
	perOffer int
}

type simTask struct {
	o   allocator.Offer // the task's framework, agent, role and resources
	end int
}

func newSim(t *testing.T, a *Allocator) *sim {
	return &sim{t: t, a: a, shape: map[allocator.FrameworkID]allocator.Resources{}}
}

func (s *sim) run(steps int) {
	for range steps {
		s.step++
		kept := s.tasks[:0]
		for _, tk := range s.tasks {
			if tk.end > s.step {
				kept = append(kept, tk)
				continue
			}
			must(s.t, s.a.Recover(tk.o.Framework, tk.o.Agent, tk.o.Role, tk.o.Resources, 0))
		}
		s.tasks = kept
		for _, o := range s.a.Allocate() {
			s.accept(o)
		}
	}
}

func (s *sim) accept(o allocator.Offer) {
	shape := s.shape[o.Framework]
	left := o.Resources
	for n := 0; left.Contains(shape) && (s.perOffer == 0 || n < s.perOffer); n++ {
		left = left.Subtract(shape)
		s.n++
		tk := o
		tk.Resources = shape
		s.tasks = append(s.tasks, simTask{o: tk, end: s.step + 1 + s.n%5})
	}
	if !left.Empty() {
		must(s.t, s.a.Recover(o.Framework, o.Agent, o.Role, left, 0))
	}
}

// used sums the resources of running tasks by framework.
func (s *sim) used() map[allocator.FrameworkID]allocator.Resources {
	m := map[allocator.FrameworkID]allocator.Resources{}
	for _, tk := range s.tasks {
		m[tk.o.Framework] = m[tk.o.Framework].Add(tk.o.Resources)
	}
	return m
}

// avgUsed averages used() over steps steps.
func (s *sim) avgUsed(steps int) map[allocator.FrameworkID]allocator.Resources {
	sum := map[allocator.FrameworkID]allocator.Resources{}
	for range steps {
		s.run(1)
		for id, r := range s.used() {
			sum[id] = sum[id].Add(r)
		}
	}
	for id, r := range sum {
		sum[id] = allocator.Resources{CPUs: r.CPUs / float64(steps), MemoryBytes: r.MemoryBytes / int64(steps)}
	}
	return sum
}

func within(got, want, tolerance float64) bool {
	return got >= want*(1-tolerance) && got <= want*(1+tolerance)
}

func TestWeightedRolesConvergeToWeights(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 40, res(4, 16))
	must(t, a.UpdateWeights(map[string]float64{"light": 1, "heavy": 2}))
	addFramework(t, a, "fw-light", "light")
	addFramework(t, a, "fw-heavy", "heavy")
	s := newSim(t, a)
	s.shape["fw-light"] = res(1, 1)
	s.shape["fw-heavy"] = res(1, 1)
	s.run(50)
	u := s.avgUsed(100)
	ratio := u["fw-heavy"].CPUs / u["fw-light"].CPUs
	t.Logf("cpus used: light %.1f, heavy %.1f, ratio %.2f", u["fw-light"].CPUs, u["fw-heavy"].CPUs, ratio)
	if !within(ratio, 2, 0.1) {
		t.Fatalf("heavy:light cpus = %.2f, want 2 ± 10%% (weights 2:1)", ratio)
	}
	if total := u["fw-light"].CPUs + u["fw-heavy"].CPUs; total < 0.8*160 {
		t.Fatalf("only %.0f of 160 cpus used on average: the cluster should stay saturated", total)
	}
}

func TestUpdateWeightsMovesShares(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 40, res(4, 16))
	addFramework(t, a, "fw-a", "a")
	addFramework(t, a, "fw-b", "b")
	s := newSim(t, a)
	s.shape["fw-a"] = res(1, 1)
	s.shape["fw-b"] = res(1, 1)
	s.run(50)
	u := s.avgUsed(50)
	if r := u["fw-b"].CPUs / u["fw-a"].CPUs; !within(r, 1, 0.1) {
		t.Fatalf("equal weights: b:a = %.2f, want 1 ± 10%%", r)
	}
	must(t, a.UpdateWeights(map[string]float64{"b": 3}))
	if w := a.Weights(); w["b"] != 3 || len(w) != 1 {
		t.Fatalf("Weights() = %v, want b=3 only", w)
	}
	s.run(50)
	u = s.avgUsed(100)
	r := u["fw-b"].CPUs / u["fw-a"].CPUs
	t.Logf("after weight b=3: b:a = %.2f", r)
	if !within(r, 3, 0.12) {
		t.Fatalf("after UpdateWeights b=3: b:a = %.2f, want 3 ± 12%%", r)
	}
	for _, ri := range a.Roles() {
		if want := map[string]float64{"a": 1, "b": 3}[ri.Name]; ri.Weight != want {
			t.Errorf("role %s weight %v, want %v", ri.Name, ri.Weight, want)
		}
	}
}

// Inside one role, DRF equalises dominant shares: the DRF paper's example
// (9 cpus, 18 GiB; A's tasks <1 cpu, 4 GiB>, B's <3 cpus, 1 GiB>) ends with
// A on 3 tasks and B on 2, both at a dominant share of 2/3, when each
// framework launches one task per offer (progressive filling).
func TestDRFBetweenFrameworksInARole(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 1, res(9, 18))
	addFramework(t, a, "A", "r")
	addFramework(t, a, "B", "r")
	s := newSim(t, a)
	s.perOffer = 1
	s.shape["A"] = res(1, 4)
	s.shape["B"] = res(3, 1)
	for range 10 { // tasks that never end
		for _, o := range a.Allocate() {
			s.accept(o)
		}
	}
	u := s.used()
	t.Logf("A %s, B %s", u["A"], u["B"])
	if !u["A"].Equal(res(3, 12)) || !u["B"].Equal(res(6, 2)) {
		t.Fatalf("A holds %s, B %s: want A 3 tasks (3 cpus, 12 GiB), B 2 (6 cpus, 2 GiB)", u["A"], u["B"])
	}
}

// Many frameworks in one role on saturating work each get a fair slice.
func TestDRFManyFrameworksEqualShares(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 50, res(4, 16))
	for i := range 5 {
		id := allocator.FrameworkID(fmt.Sprintf("fw%d", i))
		addFramework(t, a, id, "r")
	}
	s := newSim(t, a)
	for i := range 5 {
		s.shape[allocator.FrameworkID(fmt.Sprintf("fw%d", i))] = res(1, 1)
	}
	s.run(50)
	u := s.avgUsed(100)
	for id, r := range u {
		if !within(r.CPUs, 200.0/5, 0.15) {
			t.Errorf("%s used %.1f cpus on average, want 40 ± 15%%", id, r.CPUs)
		}
	}
}

// Hierarchical roles: eng/web and eng/batch share eng's half of the
// cluster, ops has the other half (flat roles would give a third each).
func TestHierarchicalRoles(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 40, res(4, 16))
	addFramework(t, a, "fw-web", "eng/web")
	addFramework(t, a, "fw-batch", "eng/batch")
	addFramework(t, a, "fw-ops", "ops")
	s := newSim(t, a)
	for _, id := range []allocator.FrameworkID{"fw-web", "fw-batch", "fw-ops"} {
		s.shape[id] = res(1, 1)
	}
	s.run(50)
	u := s.avgUsed(100)
	t.Logf("cpus: eng/web %.1f, eng/batch %.1f, ops %.1f", u["fw-web"].CPUs, u["fw-batch"].CPUs, u["fw-ops"].CPUs)
	if !within(u["fw-ops"].CPUs, 80, 0.1) || !within(u["fw-web"].CPUs, 40, 0.15) || !within(u["fw-batch"].CPUs, 40, 0.15) {
		t.Fatalf("ops %.1f, eng/web %.1f, eng/batch %.1f cpus: want 80, 40, 40",
			u["fw-ops"].CPUs, u["fw-web"].CPUs, u["fw-batch"].CPUs)
	}

	// eng's weight 3 gives its subtree 3/4; inside it, eng/web weighs 2.
	must(t, a.UpdateWeights(map[string]float64{"eng": 3, "eng/web": 2}))
	s.run(50)
	u = s.avgUsed(100)
	t.Logf("weights eng=3, eng/web=2: eng/web %.1f, eng/batch %.1f, ops %.1f", u["fw-web"].CPUs, u["fw-batch"].CPUs, u["fw-ops"].CPUs)
	if !within(u["fw-ops"].CPUs, 40, 0.15) || !within(u["fw-web"].CPUs, 80, 0.1) || !within(u["fw-batch"].CPUs, 40, 0.15) {
		t.Fatalf("ops %.1f, eng/web %.1f, eng/batch %.1f cpus: want 40, 80, 40",
			u["fw-ops"].CPUs, u["fw-web"].CPUs, u["fw-batch"].CPUs)
	}
}

// A role with frameworks and child roles: eng's own framework and eng/web
// split eng's part evenly (Mesos's virtual leaf "eng/.").
func TestRoleWithFrameworksAndChildren(t *testing.T) {
	a, _ := newTest(t)
	addAgents(t, a, 40, res(4, 16))
	addFramework(t, a, "fw-eng", "eng")
	addFramework(t, a, "fw-web", "eng/web")
	addFramework(t, a, "fw-ops", "ops")
	s := newSim(t, a)
	for _, id := range []allocator.FrameworkID{"fw-eng", "fw-web", "fw-ops"} {
		s.shape[id] = res(1, 1)
	}
	s.run(50)
	u := s.avgUsed(100)
	t.Logf("cpus: eng %.1f, eng/web %.1f, ops %.1f", u["fw-eng"].CPUs, u["fw-web"].CPUs, u["fw-ops"].CPUs)
	if !within(u["fw-ops"].CPUs, 80, 0.1) || !within(u["fw-eng"].CPUs, 40, 0.15) || !within(u["fw-web"].CPUs, 40, 0.15) {
		t.Fatalf("ops %.1f, eng %.1f, eng/web %.1f cpus: want 80, 40, 40",
			u["fw-ops"].CPUs, u["fw-eng"].CPUs, u["fw-web"].CPUs)
	}
}

package agent

import (
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/isolators"
)

func TestParseResources(t *testing.T) {
	r, set, err := ParseResources("cpus:2.5; mem:1024;disk:10GiB")
	if err != nil || r.CPUs != 2.5 || r.Memory != 1<<30 || r.Disk != 10<<30 || !set["cpus"] || !set["disk"] {
		t.Fatalf("%+v %v %v", r, set, err)
	}
	for _, bad := range []string{"cpus", "cpus:", "cpus:-1", "cpus:x", "gpus:1", "mem:lots", "cpus:1;cpus:2", "mem:-5", "cpus:NaN", "cpus:nan", "cpus:Inf", "cpus:+inf", "mem:NaN", "disk:-Inf"} {
		if _, _, err := ParseResources(bad); err == nil {
			t.Errorf("ParseResources(%q) accepted", bad)
		}
	}
	a, err := ParseAttributes("rack:r1; zone:a")
	if err != nil || a["rack"] != "r1" || a["zone"] != "a" {
		t.Fatalf("%v %v", a, err)
	}
	if _, err := ParseAttributes("rack"); err == nil {
		t.Error("attribute without value accepted")
	}
}

func FuzzParseResources(f *testing.F) {
	f.Add("cpus:4;mem:8192;disk:100000")
	f.Add("mem:1e400")
	f.Add("cpus:NaN")
	f.Add("cpus:-Inf;mem:nan")
	f.Add("cpus:0x1p-2;disk:1e3")
	f.Fuzz(func(t *testing.T, s string) {
		r, _, err := ParseResources(s)
		if err != nil {
			return
		}
		// NaN compares false with everything: "r.CPUs < 0" alone lets it
		// through, and a NaN cpus would then fit every ledger check.
		if !(r.CPUs >= 0) || math.IsInf(r.CPUs, 0) || r.Memory < 0 || r.Disk < 0 {
			t.Fatalf("ParseResources(%q) = %+v", s, r)
		}
	})
}

func TestLedgerRefusesWhatDoesNotFit(t *testing.T) {
	l := &ledger{total: ResourceSet{CPUs: 2, Memory: 1 << 30}}
	running := []containerizer.Container{
		{ID: "a", State: containerizer.TaskRunning, Resources: isolators.Resources{CPUs: 1.5, Memory: 512 << 20}},
		{ID: "b", State: containerizer.TaskFinished, Resources: isolators.Resources{CPUs: 2}},
	}
	_, err := l.reserve("x", isolators.Resources{CPUs: 1}, running)
	if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "cpus: asked 1, free 0.5 of 2 (allocated 1.5)") {
		t.Fatalf("got %v", err)
	}
	_, err = l.reserve("x", isolators.Resources{Memory: 600 << 20}, running)
	if err == nil || !strings.Contains(err.Error(), "mem: asked 600MiB, free 512MiB of 1GiB") {
		t.Fatalf("got %v", err)
	}
	// Concurrent launches cannot both take the last half CPU.
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.reserve(string(rune('c'+i)), isolators.Resources{CPUs: 0.5}, running); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if ok != 1 {
		t.Fatalf("%d launches of 0.5 cpus fit in 0.5 free", ok)
	}
}

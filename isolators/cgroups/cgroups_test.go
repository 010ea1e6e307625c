package cgroups

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/containerd/cgroups/v3"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/isolators/isolatortest"
)

func TestContract(t *testing.T) {
	isos, err := New(Names, Options{CPUHardLimit: true})
	if err != nil {
		t.Fatalf("the built-in isolators need their controllers: %v", err)
	}
	res := isolators.Resources{CPUs: 0.5, Memory: 64 << 20, MemorySoft: 32 << 20, Pids: 20, BlkioWeight: 500}
	// What each promises to put in the spec for res; the runtime makes the
	// cgroup from it.
	want := map[string]func(t *testing.T, r *specs.LinuxResources){
		"cgroups/cpu": func(t *testing.T, r *specs.LinuxResources) {
			// Docker's --cpus 0.5: 512 shares (cpu.weight on v2), 50 ms per 100 ms.
			if r.CPU == nil || ptr(r.CPU.Shares) != 512 || ptr(r.CPU.Quota) != 50000 || ptr(r.CPU.Period) != 100000 {
				t.Errorf("cpu for 0.5 CPUs: %s", show(r.CPU))
			}
			if r.Memory != nil || r.Pids != nil || r.BlockIO != nil {
				t.Errorf("cgroups/cpu set more than cpu: %s", show(r))
			}
		},
		"cgroups/mem": func(t *testing.T, r *specs.LinuxResources) {
			m := r.Memory
			if m == nil || ptr(m.Limit) != 64<<20 || ptr(m.Reservation) != 32<<20 {
				t.Fatalf("memory for 64 MiB hard, 32 MiB soft: %s", show(m))
			}
			// No swap: memory+swap is the memory limit wherever the kernel
			// accounts swap (v2 always; v1 with memsw).
			_, err := os.Stat(Root + "/memory/memory.memsw.limit_in_bytes")
			if v2 := cgroups.Mode() == cgroups.Unified; (v2 || err == nil) && ptr(m.Swap) != 64<<20 {
				t.Errorf("memory+swap is %s, want the memory limit (no swap)", show(m.Swap))
			}
			if r.CPU != nil || r.Pids != nil || r.BlockIO != nil {
				t.Errorf("cgroups/mem set more than memory: %s", show(r))
			}
		},
		"cgroups/pids": func(t *testing.T, r *specs.LinuxResources) {
			if r.Pids == nil || ptr(r.Pids.Limit) != 20 {
				t.Errorf("pids for 20: %s", show(r.Pids))
			}
		},
		"cgroups/blkio": func(t *testing.T, r *specs.LinuxResources) {
			if r.BlockIO == nil || ptr(r.BlockIO.Weight) != 500 {
				t.Errorf("blkio for weight 500: %s", show(r.BlockIO))
			}
		},
	}
	for _, iso := range isos {
		t.Run(iso.Name(), func(t *testing.T) {
			w, ok := want[iso.Name()]
			if !ok {
				t.Fatalf("no spec expectation for %s", iso.Name())
			}
			isolatortest.Run(t, iso, res, func(t *testing.T, s *oci.Spec) {
				if s.Linux.Resources == nil {
					t.Fatal("Prepare put no resources in the spec")
				}
				w(t, s.Linux.Resources)
			})
		})
	}
}

// Weight only without hard limits (Mesos's default), and the shares floor.
func TestCPUSpecWithoutHardLimit(t *testing.T) {
	isos, err := New([]string{"cgroups/cpu"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c := isolators.Container{ID: "c", CgroupPath: "/gearbox-contract/c"}
	for cpus, shares := range map[float64]uint64{2: 2048, 0.25: 256, 0.001: 2} {
		r := isolatortest.PreparedSpec(t, isos[0], c, isolators.Resources{CPUs: cpus}).Linux.Resources
		if r == nil || r.CPU == nil || ptr(r.CPU.Shares) != shares || r.CPU.Quota != nil || r.CPU.Period != nil {
			t.Errorf("%g CPUs without hard limits: %s, want %d shares and no quota", cpus, show(r), shares)
		}
	}
}

func ptr[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func show(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestUnknownIsolatorRefused(t *testing.T) {
	if _, err := New([]string{"cgroups/gpu"}, Options{}); err == nil || !strings.Contains(err.Error(), "cgroups/cpu") {
		t.Fatalf("got %v", err)
	}
}

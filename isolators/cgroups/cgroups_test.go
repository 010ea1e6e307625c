package cgroups

import (
	"strings"
	"testing"

	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/isolators/isolatortest"
)

func TestContract(t *testing.T) {
	isos, err := New(Names, Options{CPUHardLimit: true})
	if err != nil {
		t.Fatalf("the built-in isolators need their controllers: %v", err)
	}
	for _, iso := range isos {
		t.Run(iso.Name(), func(t *testing.T) {
			isolatortest.Run(t, iso, isolators.Resources{CPUs: 0.5, Memory: 64 << 20, MemorySoft: 32 << 20, Pids: 20, BlkioWeight: 500})
		})
	}
}

func TestUnknownIsolatorRefused(t *testing.T) {
	if _, err := New([]string{"cgroups/gpu"}, Options{}); err == nil || !strings.Contains(err.Error(), "cgroups/cpu") {
		t.Fatalf("got %v", err)
	}
}

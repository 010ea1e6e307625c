package agent

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/isolators"
)

func TestParsePorts(t *testing.T) {
	for in, want := range map[string]string{
		"[31000-32000]":             "[31000-32000]",
		"[1-1]":                     "[1-1]",
		"[80, 443, 31000-31001]":    "[80-80,443-443,31000-31001]",
		"[5-10,8-12,13-13]":         "[5-13]",
		"[31000-32000,33000-34000]": "[31000-32000,33000-34000]",
		"[]":                        "[]",
	} {
		p, err := ParsePorts(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePorts(%q) = %v, %v; want %s", in, p, err, want)
		}
	}
	for _, bad := range []string{"31000-32000", "[0-10]", "[10-5]", "[1-65536]", "[a-b]", "[1-2", "ports"} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
	r, set, err := ParseResources("cpus:1;ports:[40000-40099]")
	if err != nil || !set["ports"] || r.Ports.String() != "[40000-40099]" {
		t.Fatalf("%+v %v %v", r, set, err)
	}
	p := Ports{{10, 20}, {30, 40}}
	if got := p.minus(Ports{{15, 35}}).String(); got != "[10-14,36-40]" {
		t.Errorf("minus: %s", got)
	}
	if got := p.union(Ports{{21, 29}}).String(); got != "[10-40]" {
		t.Errorf("union: %s", got)
	}
	if !p.contains(10) || !p.contains(40) || p.contains(25) || p.contains(41) || p.contains(9) {
		t.Error("contains")
	}
}

func TestAssignPorts(t *testing.T) {
	total := Ports{{31000, 31002}}
	running := []containerizer.Container{
		{ID: "web", State: containerizer.TaskRunning, Network: isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{HostPort: 31000, ContainerPort: 80, Protocol: "tcp"}}}},
		{ID: "old", State: containerizer.TaskFinished, Network: isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{HostPort: 31001, ContainerPort: 80, Protocol: "tcp"}}}},
	}
	l := &ledger{total: ResourceSet{CPUs: 2, Memory: 1 << 30, Ports: total}}
	n := isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{HostPort: 31000, ContainerPort: 80, Protocol: "tcp"}}}
	_, err := l.reserveNet("x", isolators.Resources{}, &n, running)
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), "31000") || !strings.Contains(err.Error(), "container web") {
		t.Errorf("a taken port: %v", err)
	}
	n = isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "tcp"}}}
	if _, err := l.reserveNet("x", isolators.Resources{}, &n, running); !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), "[31000-31002]") {
		t.Errorf("a port outside the resource: %v", err)
	}
	// A finished container's port is free; picked ports skip given ones.
	n = isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{ContainerPort: 80, Protocol: "tcp"}, {HostPort: 31001, ContainerPort: 81, Protocol: "tcp"}}}
	release, err := l.reserveNet("x", isolators.Resources{}, &n, running)
	if err != nil || n.PortMappings[0].HostPort != 31002 || n.PortMappings[1].HostPort != 31001 {
		t.Fatalf("picked %v, %v", n.PortMappings, err)
	}
	// While x is in flight its ports are taken; the agent has none left.
	n2 := isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{ContainerPort: 80, Protocol: "tcp"}}}
	if _, err := l.reserveNet("y", isolators.Resources{}, &n2, running); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "ports") {
		t.Errorf("no port left: %v", err)
	}
	release()
	if total, alloc := l.usage(running); alloc.Ports.String() != "[31000-31000]" || total.Ports.String() != "[31000-31002]" {
		t.Errorf("usage: total %v allocated %v", total.Ports, alloc.Ports)
	}
}

// Concurrent launches asking for picked ports all get different ones.
func TestAssignPortsConcurrent(t *testing.T) {
	l := &ledger{total: ResourceSet{CPUs: 64, Memory: 1 << 40, Ports: Ports{{40000, 40015}}}}
	var mu sync.Mutex
	got := map[uint16]bool{}
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			n := isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{ContainerPort: 80, Protocol: "tcp"}}}
			if _, err := l.reserveNet(fmt.Sprint(i), isolators.Resources{}, &n, nil); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			got[n.PortMappings[0].HostPort] = true
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	if len(got) != 16 {
		t.Errorf("16 launches got %d distinct ports", len(got))
	}
}

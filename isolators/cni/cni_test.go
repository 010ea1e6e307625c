package cni

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/isolators"
)

// fakeBin is a plugin dir with executables of the given names.
func fakeBin(t *testing.T, names ...string) string {
	dir := t.TempDir()
	for _, n := range names {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestNetworksAndChecks(t *testing.T) {
	conf := t.TempDir()
	os.WriteFile(filepath.Join(conf, "10-mac.conflist"), []byte(`{"cniVersion":"1.0.0","name":"mac","plugins":[{"type":"macvlan","master":"eth0"}]}`), 0o644)
	os.WriteFile(filepath.Join(conf, "20-ptp.conf"), []byte(`{"cniVersion":"1.0.0","name":"ptp","type":"ptp"}`), 0o644)
	bin := fakeBin(t, "bridge", "host-local", "portmap", "firewall", "loopback", "ptp")
	i, err := New(Config{ConfDir: conf, BinDirs: []string{bin}, StateDir: t.TempDir(), Subnet: "10.77.0.0/24", DNS: DNS{Servers: []string{"10.0.0.53"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(i.Networks(), ","); got != "gearbox,mac,none,ptp" {
		t.Errorf("networks %s", got)
	}
	if got := i.networks[DefaultNetwork].Plugins[0].Network.IPAM.Type; got != "host-local" || !strings.Contains(string(i.networks[DefaultNetwork].Bytes), "10.77.0.0/24") {
		t.Errorf("default network: %s", i.networks[DefaultNetwork].Bytes)
	}
	for _, tc := range []struct {
		n       isolators.Network
		invalid bool // else failed precondition; nil when both false and ok
		ok      bool
		mention string
	}{
		{n: isolators.Network{}, ok: true},
		{n: isolators.Network{Name: "gearbox", Hostname: "web-1.example", PortMappings: []isolators.PortMapping{{HostPort: 1, ContainerPort: 80, Protocol: "tcp"}}}, ok: true},
		{n: isolators.Network{Name: "ptp"}, ok: true},
		{n: isolators.Network{Name: "none"}, ok: true},
		{n: isolators.Network{Name: "nosuch"}, invalid: true, mention: "host, gearbox, mac, none, ptp"},
		{n: isolators.Network{Name: "mac"}, mention: "macvlan"},
		{n: isolators.Network{Name: "host", PortMappings: []isolators.PortMapping{{ContainerPort: 80, Protocol: "tcp"}}}, invalid: true, mention: "port mappings"},
		{n: isolators.Network{Name: "none", PortMappings: []isolators.PortMapping{{ContainerPort: 80, Protocol: "tcp"}}}, invalid: true, mention: "none"},
		{n: isolators.Network{Name: "gearbox", Hostname: "-x"}, invalid: true, mention: "-x"},
		{n: isolators.Network{Name: "gearbox", Hostname: strings.Repeat("a", 64)}, invalid: true, mention: "63"},
		{n: isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{HostPort: 5, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 5, ContainerPort: 81, Protocol: "tcp"}}}, invalid: true, mention: "twice"},
		{n: isolators.Network{Name: "gearbox", PortMappings: []isolators.PortMapping{{HostPort: 5, ContainerPort: 0, Protocol: "tcp"}}}, invalid: true, mention: "container port"},
	} {
		err := i.Check(tc.n)
		switch {
		case tc.ok:
			if err != nil {
				t.Errorf("%+v: %v", tc.n, err)
			}
		case tc.invalid:
			if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.mention) {
				t.Errorf("%+v: %v, want InvalidArgument naming %q", tc.n, err, tc.mention)
			}
		default:
			if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), Package) {
				t.Errorf("%+v: %v, want FailedPrecondition naming %q and the package", tc.n, err, tc.mention)
			}
		}
	}
	if string(i.resolv) != "nameserver 10.0.0.53\n" {
		t.Errorf("resolv.conf %q", i.resolv)
	}
	// Nothing to release, twice: Cleanup and Detach are idempotent.
	for k := 0; k < 2; k++ {
		if err := i.Detach(t.Context(), isolators.Container{ID: "c"}); err != nil {
			t.Fatal(err)
		}
		if err := i.Cleanup(t.Context(), isolators.Container{ID: "c"}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBadNetworkFiles(t *testing.T) {
	for name, body := range map[string]string{
		"reserved": `{"cniVersion":"1.0.0","name":"host","plugins":[{"type":"bridge"}]}`,
		"garbage":  `{"cniVersion":`,
	} {
		conf := t.TempDir()
		os.WriteFile(filepath.Join(conf, name+".conflist"), []byte(body), 0o644)
		if _, err := New(Config{ConfDir: conf, StateDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), name+".conflist") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := New(Config{StateDir: t.TempDir(), Subnet: "nonsense"}); err == nil {
		t.Error("a bad subnet was accepted")
	}
	if _, err := New(Config{StateDir: t.TempDir(), DNS: DNS{Servers: []string{"dns.example"}}}); err == nil {
		t.Error("a DNS server that is no IP was accepted")
	}
}

func TestHostnameOf(t *testing.T) {
	for in, want := range map[string]string{"web": "web", "web_1.a": "web-1-a", "_x_": "x", strings.Repeat("a", 64): strings.Repeat("a", 63)} {
		if got := hostnameOf(in); got != want || CheckHostname(got) != nil {
			t.Errorf("hostnameOf(%q) = %q, want %q", in, got, want)
		}
	}
}

package main

import (
	"testing"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/proto"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestParsePortMapping(t *testing.T) {
	good := map[string]*typesv1.PortMapping{
		"8080":         {ContainerPort: 8080, Protocol: "tcp"},
		"31080:8080":   {HostPort: 31080, ContainerPort: 8080, Protocol: "tcp"},
		"31053:53/udp": {HostPort: 31053, ContainerPort: 53, Protocol: "udp"},
		"9000/tcp":     {ContainerPort: 9000, Protocol: "tcp"},
		"65535:1/tcp":  {HostPort: 65535, ContainerPort: 1, Protocol: "tcp"},
	}
	for in, want := range good {
		got, err := parsePortMapping(in)
		if err != nil || !proto.Equal(got, want) {
			t.Errorf("parsePortMapping(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "70000", "1:70000", "80/sctp", "a:80", "80:", ":80", "1:2:3", "-1"} {
		if _, err := parsePortMapping(in); err == nil {
			t.Errorf("parsePortMapping(%q) accepted", in)
		}
	}
}

func TestNetworkFlagsApply(t *testing.T) {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	nf := addNetworkFlags(fs)
	if err := fs.Parse([]string{"--network", "gearbox", "--hostname", "web", "-p", "31080:80", "-p", "443/udp"}); err != nil {
		t.Fatal(err)
	}
	req := &agentv1.LaunchContainerRequest{}
	if err := nf.apply(req); err != nil {
		t.Fatal(err)
	}
	want := &agentv1.LaunchContainerRequest{Network: "gearbox", Hostname: "web", PortMappings: []*typesv1.PortMapping{
		{HostPort: 31080, ContainerPort: 80, Protocol: "tcp"}, {ContainerPort: 443, Protocol: "udp"}}}
	if !proto.Equal(req, want) {
		t.Fatalf("request %v, want %v", req, want)
	}
	fs = pflag.NewFlagSet("run", pflag.ContinueOnError)
	nf = addNetworkFlags(fs)
	fs.Parse([]string{"-p", "80:70000"})
	if err := nf.apply(&agentv1.LaunchContainerRequest{}); err == nil {
		t.Fatal("a port beyond 65535 was accepted")
	}
}

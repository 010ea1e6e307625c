package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func TestHealthFlags(t *testing.T) {
	parse := func(args ...string) (*agentv1.LaunchContainerRequest, error) {
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		f := addHealthFlags(fs)
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		req := &agentv1.LaunchContainerRequest{}
		return req, f.apply(req)
	}
	req, err := parse("--health-cmd", "wget -q -O- localhost", "--health-interval", "2s", "--health-timeout", "1s", "--health-retries", "5", "--health-start-period", "30s")
	hc := req.GetHealthCheck()
	if err != nil || strings.Join(hc.GetCommand(), "|") != "/bin/sh|-c|wget -q -O- localhost" || hc.GetInterval().AsDuration() != 2*time.Second ||
		hc.GetTimeout().AsDuration() != time.Second || hc.GetConsecutiveFailures() != 5 || hc.GetGracePeriod().AsDuration() != 30*time.Second {
		t.Fatalf("cmd: %v %v", hc, err)
	}
	req, err = parse("--health-http", "https:8443/healthz")
	if h := req.GetHealthCheck().GetHttp(); err != nil || h.GetPort() != 8443 || h.GetPath() != "/healthz" || h.GetScheme() != "https" {
		t.Fatalf("http: %v %v", h, err)
	}
	req, err = parse("--health-tcp", "6379")
	if err != nil || req.GetHealthCheck().GetTcp().GetPort() != 6379 {
		t.Fatalf("tcp: %v %v", req, err)
	}
	if req, err = parse("--no-healthcheck"); err != nil || !req.GetNoHealthcheck() || req.GetHealthCheck() != nil {
		t.Fatalf("none: %v %v", req, err)
	}
	if req, err = parse(); err != nil || req.GetHealthCheck() != nil || req.GetNoHealthcheck() {
		t.Fatalf("no flags: %v %v", req, err)
	}
	for _, bad := range [][]string{
		{"--no-healthcheck", "--health-tcp", "80"},
		{"--health-interval", "5s"},
		{"--health-tcp", "eighty"},
		{"--health-http", "x/y"},
	} {
		if _, err := parse(bad...); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// healthFlags are the Docker-shaped health check flags of run (and task
// launch): one of --health-cmd, --health-http, --health-tcp, with the
// timings; or --no-healthcheck, which also turns the image's HEALTHCHECK
// off. The agent validates the check (InvalidArgument naming the field).
type healthFlags struct {
	fs          *pflag.FlagSet
	cmd         string
	http        string
	tcp         string
	interval    time.Duration
	timeout     time.Duration
	startPeriod time.Duration
	delay       time.Duration
	retries     uint32
	none        bool
}

func addHealthFlags(fs *pflag.FlagSet) *healthFlags {
	f := &healthFlags{fs: fs}
	fs.StringVar(&f.cmd, "health-cmd", "", "health check: a shell command run in the container (exit 0: healthy)")
	fs.StringVar(&f.http, "health-http", "", "health check: GET [https:]PORT[/PATH] inside the container's network (200-399: healthy)")
	fs.StringVar(&f.tcp, "health-tcp", "", "health check: connect to PORT inside the container's network")
	fs.DurationVar(&f.interval, "health-interval", 0, "time between health checks (default 10s)")
	fs.DurationVar(&f.timeout, "health-timeout", 0, "a health check that takes longer fails (default: the interval, at most 20s)")
	fs.DurationVar(&f.startPeriod, "health-start-period", 0, "failures in this time after the start, before a success, do not count (default 10s)")
	fs.DurationVar(&f.delay, "health-delay", 0, "wait this long after the start before the first health check")
	fs.Uint32Var(&f.retries, "health-retries", 0, "failed health checks in a row that get the container killed (default 3)")
	fs.BoolVar(&f.none, "no-healthcheck", false, "run no health check, not even the image's HEALTHCHECK")
	return f
}

func (f *healthFlags) changed(name string) bool { return f.fs.Changed(name) }

// apply sets req's health check from the flags.
func (f *healthFlags) apply(req *agentv1.LaunchContainerRequest) error {
	hc := &typesv1.HealthCheck{}
	kinds := false
	if f.changed("health-cmd") {
		hc.Command, kinds = []string{"/bin/sh", "-c", f.cmd}, true
		if strings.TrimSpace(f.cmd) == "" {
			hc.Command, hc.Type = nil, typesv1.HealthCheck_COMMAND // the agent says what is wrong
		}
	}
	if f.changed("health-http") {
		h, err := parseHealthHTTP(f.http)
		if err != nil {
			return err
		}
		hc.Http, kinds = h, true
	}
	if f.changed("health-tcp") {
		p, err := parsePort("--health-tcp", f.tcp)
		if err != nil {
			return err
		}
		hc.Tcp, kinds = &typesv1.TCPCheck{Port: p}, true
	}
	timing := false
	for name, d := range map[string]*time.Duration{"health-interval": &f.interval, "health-timeout": &f.timeout,
		"health-start-period": &f.startPeriod, "health-delay": &f.delay} {
		if !f.changed(name) {
			continue
		}
		timing = true
		pd := durationpb.New(*d)
		switch name {
		case "health-interval":
			hc.Interval = pd
		case "health-timeout":
			hc.Timeout = pd
		case "health-start-period":
			hc.GracePeriod = pd
		case "health-delay":
			hc.Delay = pd
		}
	}
	if f.changed("health-retries") {
		hc.ConsecutiveFailures, timing = f.retries, true
	}
	switch {
	case f.none && (kinds || timing):
		return fmt.Errorf("--no-healthcheck conflicts with the --health-* flags: give one or the other")
	case f.none:
		req.NoHealthcheck = true
	case kinds:
		req.HealthCheck = hc
	case timing:
		return fmt.Errorf("the --health-* timings need a check: add --health-cmd, --health-http or --health-tcp")
	}
	return nil
}

// parseHealthHTTP reads [https:]PORT[/PATH].
func parseHealthHTTP(s string) (*typesv1.HTTPCheck, error) {
	h := &typesv1.HTTPCheck{}
	if rest, ok := strings.CutPrefix(s, "https:"); ok {
		h.Scheme, s = "https", rest
	} else if rest, ok := strings.CutPrefix(s, "http:"); ok {
		h.Scheme, s = "http", rest
	}
	port, path, hasPath := strings.Cut(s, "/")
	p, err := parsePort("--health-http", port)
	if err != nil {
		return nil, err
	}
	h.Port = p
	if hasPath {
		h.Path = "/" + path
	}
	return h, nil
}

func parsePort(flag, s string) (uint32, error) {
	p, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("%s %q: write a port number (e.g. 8080)", flag, s)
	}
	return uint32(p), nil
}

// healthSuffix is what ps adds to a running container's status, as
// Docker does: " (healthy)", " (unhealthy)", " (health: starting)".
func healthSuffix(ct *agentv1.Container) string {
	switch ct.GetHealth() {
	case typesv1.HealthState_HEALTH_STATE_HEALTHY:
		return " (healthy)"
	case typesv1.HealthState_HEALTH_STATE_UNHEALTHY:
		return " (unhealthy)"
	case typesv1.HealthState_HEALTH_STATE_STARTING:
		return " (health: starting)"
	}
	return ""
}

// healthWord is a health state as inspect and tasks show it.
func healthWord(s typesv1.HealthState) string {
	return strings.ToLower(strings.TrimPrefix(s.String(), "HEALTH_STATE_"))
}

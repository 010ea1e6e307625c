// Package checks runs health checks against containers, as Mesos's agent
// does (docs/health-checks.md): COMMAND runs in the container, sharing its
// namespaces and cgroup; HTTP and TCP are made from inside its network
// namespace, so that they reach what the container listens on whatever its
// network. One scheduler (a timer heap) runs every container's checks with
// bounded concurrency; see scheduler.go.
//
// The package knows containers only by ID and through the Env the agent
// gives it; it imports neither agent nor master.
package checks

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/internal/errs"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Kind is what a check does.
type Kind = typesv1.HealthCheck_Type

const (
	Command = typesv1.HealthCheck_COMMAND
	HTTP    = typesv1.HealthCheck_HTTP
	TCP     = typesv1.HealthCheck_TCP
)

// State is a container's health: the types.v1 enum.
type State = typesv1.HealthState

const (
	Unknown   = typesv1.HealthState_HEALTH_STATE_UNSPECIFIED
	Starting  = typesv1.HealthState_HEALTH_STATE_STARTING
	Healthy   = typesv1.HealthState_HEALTH_STATE_HEALTHY
	Unhealthy = typesv1.HealthState_HEALTH_STATE_UNHEALTHY
)

// Defaults, as Mesos's (interval 10s, timeout 20s capped here at the
// interval, 3 failures, grace 10s, no delay).
const (
	DefaultInterval            = 10 * time.Second
	DefaultTimeout             = 20 * time.Second
	DefaultConsecutiveFailures = 3
	DefaultGracePeriod         = 10 * time.Second
	// MinInterval keeps a check from becoming a load of its own.
	MinInterval = 100 * time.Millisecond
	// MaxOutput bounds the output kept of one check (Docker keeps 4 KiB).
	MaxOutput = 4096
)

// Check is a validated health check with its defaults filled in.
type Check struct {
	Kind    Kind     `json:"kind"`
	Command []string `json:"command,omitempty"`
	Port    uint16   `json:"port,omitempty"`
	Path    string   `json:"path,omitempty"`
	Scheme  string   `json:"scheme,omitempty"` // http or https

	Delay               time.Duration `json:"delay"`
	Interval            time.Duration `json:"interval"`
	Timeout             time.Duration `json:"timeout"`
	ConsecutiveFailures int           `json:"consecutive_failures"`
	GracePeriod         time.Duration `json:"grace_period"`
}

// Status is what the checks last said of a container.
type Status struct {
	State State
	// Output of the last check (bounded by MaxOutput).
	Output string
	// Failures in a row counted so far (not those in the grace period).
	Failures  int
	CheckedAt time.Time
}

func invalid(field, format string, a ...any) error {
	return errs.New(errdefs.ErrInvalidArgument, "health_check.%s: %s", field, fmt.Sprintf(format, a...))
}

// duration reads an optional duration field: def when absent.
func duration(d *durationpb.Duration, field string, def time.Duration) (time.Duration, error) {
	if d == nil {
		return def, nil
	}
	if err := d.CheckValid(); err != nil {
		return 0, invalid(field, "%v", err)
	}
	v := d.AsDuration()
	if v < 0 {
		return 0, invalid(field, "must not be negative (got %s)", v)
	}
	return v, nil
}

// FromProto validates a HealthCheck and fills in its defaults. Every error
// is InvalidArgument and names the field.
func FromProto(p *typesv1.HealthCheck) (Check, error) {
	var c Check
	kinds := 0
	if len(p.GetCommand()) > 0 {
		kinds++
		c.Kind = Command
	}
	if p.GetHttp() != nil {
		kinds++
		c.Kind = HTTP
	}
	if p.GetTcp() != nil {
		kinds++
		c.Kind = TCP
	}
	switch {
	case kinds > 1:
		return c, invalid("type", "give one of command, http or tcp, not %d", kinds)
	case kinds == 0 && p.GetType() == Command:
		return c, invalid("command", "empty: give the command to run in the container")
	case kinds == 0:
		return c, invalid("type", "give one of command, http or tcp")
	case p.GetType() != typesv1.HealthCheck_TYPE_UNSPECIFIED && p.GetType() != c.Kind:
		return c, invalid("type", "%s, but a %s check is given", p.GetType(), c.Kind)
	}
	if err := c.target(p); err != nil {
		return c, err
	}
	var err error
	if c.Delay, err = duration(p.GetDelay(), "delay", 0); err != nil {
		return c, err
	}
	if c.Interval, err = duration(p.GetInterval(), "interval", DefaultInterval); err != nil {
		return c, err
	}
	if c.Interval < MinInterval {
		return c, invalid("interval", "%s is below the minimum of %s", c.Interval, MinInterval)
	}
	if c.Timeout, err = duration(p.GetTimeout(), "timeout", min(DefaultTimeout, c.Interval)); err != nil {
		return c, err
	}
	if c.Timeout == 0 {
		return c, invalid("timeout", "must be positive")
	}
	if c.Timeout > c.Interval {
		return c, invalid("timeout", "%s is longer than the interval (%s): a check would still run when the next is due", c.Timeout, c.Interval)
	}
	if c.GracePeriod, err = duration(p.GetGracePeriod(), "grace_period", DefaultGracePeriod); err != nil {
		return c, err
	}
	c.ConsecutiveFailures = int(p.GetConsecutiveFailures())
	if c.ConsecutiveFailures == 0 {
		c.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if c.ConsecutiveFailures > 1000 {
		return c, invalid("consecutive_failures", "%d is over 1000", c.ConsecutiveFailures)
	}
	return c, nil
}

// target reads what the check reaches: the command, or the port.
func (c *Check) target(p *typesv1.HealthCheck) error {
	switch c.Kind {
	case Command:
		c.Command = append([]string{}, p.GetCommand()...)
		if strings.TrimSpace(c.Command[0]) == "" {
			return invalid("command", "the program (first word) is empty")
		}
	case HTTP:
		h := p.GetHttp()
		if h.GetPort() == 0 || h.GetPort() > 65535 {
			return invalid("http.port", "%d is out of range 1-65535", h.GetPort())
		}
		c.Port, c.Path, c.Scheme = uint16(h.GetPort()), h.GetPath(), h.GetScheme()
		if c.Path == "" {
			c.Path = "/"
		}
		if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \r\n") {
			return invalid("http.path", "%q must start with / and hold no spaces", c.Path)
		}
		switch c.Scheme {
		case "":
			c.Scheme = "http"
		case "http", "https":
		default:
			return invalid("http.scheme", "%q: use http or https", c.Scheme)
		}
	case TCP:
		port := p.GetTcp().GetPort()
		if port == 0 || port > 65535 {
			return invalid("tcp.port", "%d is out of range 1-65535", port)
		}
		c.Port = uint16(port)
	}
	return nil
}

// Proto is the check as the API carries it.
func (c Check) Proto() *typesv1.HealthCheck {
	p := &typesv1.HealthCheck{
		Type:                c.Kind,
		Delay:               durationpb.New(c.Delay),
		Interval:            durationpb.New(c.Interval),
		Timeout:             durationpb.New(c.Timeout),
		ConsecutiveFailures: uint32(c.ConsecutiveFailures),
		GracePeriod:         durationpb.New(c.GracePeriod),
	}
	switch c.Kind {
	case Command:
		p.Command = append([]string{}, c.Command...)
	case HTTP:
		p.Http = &typesv1.HTTPCheck{Port: uint32(c.Port), Path: c.Path, Scheme: c.Scheme}
	case TCP:
		p.Tcp = &typesv1.TCPCheck{Port: uint32(c.Port)}
	}
	return p
}

// String describes the check for logs and messages.
func (c Check) String() string {
	switch c.Kind {
	case Command:
		return "command " + strings.Join(c.Command, " ")
	case HTTP:
		return fmt.Sprintf("%s GET :%d%s", c.Scheme, c.Port, c.Path)
	case TCP:
		return fmt.Sprintf("tcp :%d", c.Port)
	}
	return "no check"
}

// ErrProcessGone is wrapped by a probe whose container's process is no
// longer the one the check was set up for.
var ErrProcessGone = errors.New("the container's process is gone")

// Docker's defaults for an image's HEALTHCHECK.
const (
	dockerInterval = 30 * time.Second
	dockerTimeout  = 30 * time.Second
	dockerRetries  = 3
)

// FromDocker turns a Docker HEALTHCHECK (an image config's Healthcheck, or
// docker run's --health-* flags) into a HealthCheck: Test ["CMD", args...]
// runs args, ["CMD-SHELL", cmd] runs /bin/sh -c cmd; ["NONE"] or an empty
// test is no check (nil). StartPeriod is Mesos's grace period, Retries its
// consecutive failures; zero values are Docker's defaults.
func FromDocker(test []string, interval, timeout, startPeriod time.Duration, retries int) *typesv1.HealthCheck {
	if len(test) == 0 {
		return nil
	}
	var cmd []string
	switch test[0] {
	case "CMD":
		cmd = test[1:]
	case "CMD-SHELL":
		cmd = []string{"/bin/sh", "-c", strings.Join(test[1:], " ")}
	default:
		return nil // NONE, or a form Docker does not know
	}
	if interval == 0 {
		interval = dockerInterval
	}
	if timeout == 0 {
		timeout = min(dockerTimeout, interval)
	}
	if retries == 0 {
		retries = dockerRetries
	}
	return &typesv1.HealthCheck{Type: Command, Command: cmd, Interval: durationpb.New(interval), Timeout: durationpb.New(timeout),
		GracePeriod: durationpb.New(startPeriod), ConsecutiveFailures: uint32(max(retries, 0))}
}

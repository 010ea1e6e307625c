// Package launchspec checks a container spec (agentv1.LaunchContainerRequest)
// for what needs no agent: the Agent API's LaunchContainer and the master's
// LaunchTask refuse the same malformed specs with the same words, because
// both call this. What only an agent can judge (its runtimes, its loggers,
// its isolators' limits, privileged) is left to the agent.
//
// Errors are errdefs.ErrInvalidArgument and name the field.
package launchspec

import (
	"math"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"github.com/distribution/reference"

	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// MaxLabel bounds a label's key plus value (containerd keeps labels
// small; a container's own labels ride along with gearbox's).
const MaxLabel = 3000

func invalid(format string, a ...any) error {
	return errs.New(errdefs.ErrInvalidArgument, format, a...)
}

// Validate checks r. An empty container_id is accepted (the agent
// generates one; a task's is the task's ID).
func Validate(r *agentv1.LaunchContainerRequest) error {
	if id := r.GetContainerId(); id != "" {
		if err := ids.Validate(id); err != nil {
			return invalid("container_id: %w", err)
		}
	}
	if _, err := NormalizeRef(r.GetImage()); err != nil {
		return err
	}
	if err := CheckEnv(r.GetEnv()); err != nil {
		return err
	}
	if err := CheckLabels(r.GetLabels()); err != nil {
		return err
	}
	if sz := r.GetSize(); sz != nil && (sz.Width == 0 || sz.Height == 0) {
		return invalid("size: window size %dx%d: both must be positive", sz.Width, sz.Height)
	}
	if err := checkResources(r.GetResources()); err != nil {
		return err
	}
	if l := r.GetLog(); l != nil && (l.MaxSize < 0 || l.MaxFiles < 0) {
		return invalid("log: max_size and max_files must not be negative")
	}
	if _, err := KillGrace(r.GetKillPolicy()); err != nil {
		return err
	}
	if _, ok := typesv1.PullPolicy_name[int32(r.GetPullPolicy())]; !ok {
		return invalid("pull_policy %d: use if-not-present, always or never", r.GetPullPolicy())
	}
	return nil
}

// NormalizeRef turns a Docker-style image reference into its full form
// (busybox → docker.io/library/busybox:latest).
func NormalizeRef(ref string) (string, error) {
	if ref == "" {
		return "", invalid("no image given")
	}
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", invalid("image reference %q is malformed: %v (expected e.g. busybox, registry:5000/team/app:1.2)", ref, err)
	}
	return named.String(), nil
}

// CheckEnv checks KEY=VALUE entries.
func CheckEnv(env []string) error {
	for _, e := range env {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsAny(k, " \t\n\x00") || strings.Contains(e, "\x00") {
			return invalid("env entry %q is malformed: write KEY=VALUE", e)
		}
	}
	return nil
}

// CheckLabels checks a container's labels.
func CheckLabels(labels map[string]string) error {
	for k, v := range labels {
		if k == "" || len(k)+len(v) > MaxLabel {
			return invalid("label %q: keys must be non-empty and key plus value at most %d bytes", k, MaxLabel)
		}
	}
	return nil
}

func checkResources(r *agentv1.Resources) error {
	c := r.GetCpus()
	if c < 0 || math.IsNaN(c) || math.IsInf(c, 0) {
		return invalid("resources.cpus %g: give a non-negative number", c)
	}
	if r.GetMemory() < 0 || r.GetMemorySoft() < 0 || r.GetPids() < 0 {
		return invalid("resources: memory, memory_soft and pids must not be negative")
	}
	return nil
}

// KillGrace is a kill policy's grace period (zero when there is none).
func KillGrace(p *typesv1.KillPolicy) (time.Duration, error) {
	g := p.GetGracePeriod()
	if g == nil {
		return 0, nil
	}
	if g.CheckValid() != nil || g.AsDuration() < 0 {
		return 0, invalid("kill_policy.grace_period: give a non-negative duration")
	}
	return g.AsDuration(), nil
}

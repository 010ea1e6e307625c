package launchspec

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestValidate(t *testing.T) {
	ok := func() *agentv1.LaunchContainerRequest {
		return &agentv1.LaunchContainerRequest{ContainerId: "web", Image: "busybox", Env: []string{"A=1", "B="},
			Labels: map[string]string{"k": "v"}, Resources: &agentv1.Resources{Cpus: 0.5, Memory: 1 << 20},
			KillPolicy: &typesv1.KillPolicy{GracePeriod: durationpb.New(time.Second)}, PullPolicy: typesv1.PullPolicy_PULL_NEVER}
	}
	if err := Validate(ok()); err != nil {
		t.Fatalf("a good spec: %v", err)
	}
	if err := Validate(&agentv1.LaunchContainerRequest{Image: "busybox"}); err != nil {
		t.Fatalf("no container_id (the agent names it): %v", err)
	}
	for _, tc := range []struct {
		field string
		mod   func(*agentv1.LaunchContainerRequest)
	}{
		{"container_id", func(r *agentv1.LaunchContainerRequest) { r.ContainerId = "../x" }},
		{"no image", func(r *agentv1.LaunchContainerRequest) { r.Image = "" }},
		{"image reference", func(r *agentv1.LaunchContainerRequest) { r.Image = "UPPER::bad" }},
		{"env entry", func(r *agentv1.LaunchContainerRequest) { r.Env = []string{"NOVALUE"} }},
		{"env entry", func(r *agentv1.LaunchContainerRequest) { r.Env = []string{"A B=1"} }},
		{"label", func(r *agentv1.LaunchContainerRequest) { r.Labels = map[string]string{"": "v"} }},
		{"label", func(r *agentv1.LaunchContainerRequest) {
			r.Labels = map[string]string{"k": strings.Repeat("v", MaxLabel)}
		}},
		{"size", func(r *agentv1.LaunchContainerRequest) { r.Size = &agentv1.WindowSize{Height: 24} }},
		{"resources.cpus", func(r *agentv1.LaunchContainerRequest) { r.Resources.Cpus = math.NaN() }},
		{"resources", func(r *agentv1.LaunchContainerRequest) { r.Resources.Memory = -1 }},
		{"log", func(r *agentv1.LaunchContainerRequest) { r.Log = &agentv1.LogOptions{MaxFiles: -1} }},
		{"kill_policy.grace_period", func(r *agentv1.LaunchContainerRequest) {
			r.KillPolicy.GracePeriod = durationpb.New(-time.Second)
		}},
		{"pull_policy", func(r *agentv1.LaunchContainerRequest) { r.PullPolicy = 9 }},
	} {
		r := ok()
		tc.mod(r)
		err := Validate(r)
		if !errdefs.IsInvalidArgument(err) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: %v, want InvalidArgument naming it", tc.field, err)
		}
	}
}

// Package isolatortest is the contract suite every isolator runs: the
// built-ins and out-of-process plugins (through plugin.Client) alike.
package isolatortest

import (
	"context"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/isolators"
)

// Run checks what the agent relies on from any isolator, for a container
// that was never started (its cgroup does not exist):
//   - a name;
//   - Prepare accepts no resources and the given ones, and its spec changes
//     apply to a default spec;
//   - Watch reports no limitation for a container that never ran;
//   - Usage, Status, Update and Recover do not panic;
//   - Cleanup is idempotent.
//
// Each wantSpec is given the spec that Prepare(res)'s changes made of a
// default one, to assert what the isolator promises to put there (a suite
// that never looks at the spec passes an isolator that limits nothing). For
// no resources, an isolator must leave the spec's resources without limits.
func Run(t *testing.T, iso isolators.Isolator, res isolators.Resources, wantSpec ...func(t *testing.T, s *oci.Spec)) {
	t.Helper()
	ctx := context.Background()
	c := isolators.Container{ID: "contract", CgroupPath: "/gearbox-contract/never-started", Resources: res, Sandbox: t.TempDir()}
	t.Run("Name", func(t *testing.T) {
		if iso.Name() == "" {
			t.Fatal("an isolator needs a name")
		}
	})
	t.Run("Prepare", func(t *testing.T) {
		if r := PreparedSpec(t, iso, c, isolators.Resources{}).Linux.Resources; r != nil &&
			(r.CPU != nil || r.Memory != nil || r.Pids != nil || r.BlockIO != nil) {
			t.Errorf("Prepare with no resources asked limits: %+v", r)
		}
		s := PreparedSpec(t, iso, c, res)
		for _, want := range wantSpec {
			want(t, s)
		}
	})
	t.Run("Watch", func(t *testing.T) {
		if l, _ := iso.Watch(ctx, c); l != nil {
			t.Fatalf("a container that never ran has a limitation: %+v", l)
		}
	})
	t.Run("NoPanics", func(t *testing.T) {
		var u isolators.Usage
		iso.Usage(ctx, c, &u)
		iso.Status(ctx, c)
		iso.Update(ctx, c, res)
		if err := iso.Recover(ctx, nil); err != nil {
			t.Errorf("Recover of nothing: %v", err)
		}
	})
	t.Run("CleanupIdempotent", func(t *testing.T) {
		for i := range 2 {
			if err := iso.Cleanup(ctx, c); err != nil {
				t.Fatalf("Cleanup #%d: %v", i+1, err)
			}
		}
	})
}

// PreparedSpec applies the spec changes of iso.Prepare for c with res to a
// default spec, as the agent does, and returns the spec.
func PreparedSpec(t *testing.T, iso isolators.Isolator, c isolators.Container, res isolators.Resources) *oci.Spec {
	t.Helper()
	ctx := context.Background()
	c.Resources = res
	opts, err := iso.Prepare(ctx, c)
	if err != nil {
		t.Fatalf("Prepare(%+v): %v", res, err)
	}
	spec := &oci.Spec{Process: &specs.Process{}, Linux: &specs.Linux{}}
	for _, o := range opts {
		if err := o(ctx, nil, &containers.Container{ID: c.ID}, spec); err != nil {
			t.Fatalf("a spec change from Prepare(%+v) fails: %v", res, err)
		}
	}
	return spec
}

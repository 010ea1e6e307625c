package agent

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/protobuf/proto"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// newTestMasterClient is a master client over a fake containerizer and a
// checkpoint in dir; it never dials.
func newTestMasterClient(t *testing.T, dir string, fake *fakeContainerizer, total ResourceSet) *masterClient {
	t.Helper()
	cp, err := newCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	deps := masterDeps{cp: cp, log: slog.New(slog.DiscardHandler), gate: newGate(), adm: &admission{cz: fake, ledger: &ledger{total: total}}}
	mc, err := newMasterClient("127.0.0.1:1", deps)
	if err != nil {
		t.Fatal(err)
	}
	return mc
}

// A task the agent cannot launch, or a kill of a task it never had, is
// reported as a status update, checkpointed so that a restart of the
// agent still sends it.
func TestTaskUpdatesWithoutAContainer(t *testing.T) {
	dir := t.TempDir()
	fake := newFake()
	mc := newTestMasterClient(t, dir, fake, ResourceSet{CPUs: 1, Memory: 1 << 30})

	// Too big for the agent: refused by admission, no container.
	mc.launchTask(&masterv1.Task{Id: "big", Image: "busybox", Resources: &masterv1.Resources{Cpus: 2}})
	// The containerizer fails before a container exists.
	fake.launchErr = errs.New(errdefs.ErrNotFound, "image %q not found", "nope:1")
	mc.launchTask(&masterv1.Task{Id: "noimage", Image: "nope:1"})
	// A kill for a task this agent never had.
	mc.killTask("ghost", nil)

	mc2 := newTestMasterClient(t, dir, fake, ResourceSet{})
	var got []string
	for _, u := range mc2.pending {
		got = append(got, u.TaskID+" "+u.State.String()+" "+u.Reason.String())
	}
	want := []string{
		"big TASK_FAILED REASON_CONTAINER_LAUNCH_FAILED",
		"noimage TASK_FAILED REASON_CONTAINER_LAUNCH_FAILED",
		"ghost TASK_KILLED REASON_TASK_KILLED",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("updates after a restart:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if m := mc2.pending[0].Message; !strings.Contains(m, "not enough free resources") {
		t.Errorf("the refused task's message %q does not say why", m)
	}
	if fake.launchCount() != 1 {
		t.Errorf("the containerizer saw %d launches, want 1 (the refused one never reaches it)", fake.launchCount())
	}
}

// A task whose launch fails because its container runs already is
// reported by that container's states, not by a second, invented update.
func TestTaskLaunchFailureWithAContainer(t *testing.T) {
	fake := newFake()
	mc := newTestMasterClient(t, t.TempDir(), fake, ResourceSet{CPUs: 1, Memory: 1 << 30})
	fake.put(containerizer.Container{ID: "t1", State: containerizer.TaskRunning, Labels: map[string]string{LabelTask: "true"}})
	mc.launchTask(&masterv1.Task{Id: "t1", Image: "busybox"})
	if n := mc.pendingCount(); n != 0 {
		t.Errorf("%d updates queued; the container's own states are the updates", n)
	}
	// A kill of a task that exists reaches the containerizer.
	mc.killTask("t1", nil)
	if len(fake.kills) != 1 || fake.kills[0] != "t1" || mc.pendingCount() != 0 {
		t.Errorf("kill of t1: kills %v, %d updates queued", fake.kills, mc.pendingCount())
	}
}

// A kill that arrives while the task's launch waits (for its image, say)
// ends the launch: the task is killed, not started later, and reported
// once, as killed.
func TestKillDuringTaskLaunch(t *testing.T) {
	fake := newFake()
	mc := newTestMasterClient(t, t.TempDir(), fake, ResourceSet{CPUs: 1, Memory: 1 << 30})
	fake.launching = make(chan containerizer.LaunchConfig)
	fake.hold = make(chan struct{}) // never released: the launch waits until cancelled
	done := make(chan struct{})
	go func() { defer close(done); mc.launchTask(&masterv1.Task{Id: "slow", Image: "busybox"}) }()
	<-fake.launching
	mc.killTask("slow", nil)
	<-done
	var got []string
	for _, u := range mc.pending {
		got = append(got, u.TaskID+" "+u.State.String())
	}
	if strings.Join(got, ",") != "slow TASK_KILLED" {
		t.Errorf("updates %v, want only slow TASK_KILLED", got)
	}
}

// A spec the master should have refused is refused here too, as
// LaunchContainer would refuse it, and reported.
func TestTaskSpecCheckedOnTheAgent(t *testing.T) {
	fake := newFake()
	mc := newTestMasterClient(t, t.TempDir(), fake, ResourceSet{CPUs: 1, Memory: 1 << 30})
	mc.launchTask(&masterv1.Task{Id: "bad", Container: &agentv1.LaunchContainerRequest{ContainerId: "bad", Image: "busybox", Env: []string{"NOVALUE"}}})
	if len(mc.pending) != 1 || mc.pending[0].State != containerizer.TaskFailed || !strings.Contains(mc.pending[0].Message, "NOVALUE") {
		t.Errorf("updates %+v, want one TASK_FAILED naming the bad env entry", mc.pending)
	}
	if fake.launchCount() != 0 {
		t.Errorf("the containerizer saw %d launches, want none", fake.launchCount())
	}
	// A good spec reaches the containerizer whole, labelled as the task's.
	fake.launching = make(chan containerizer.LaunchConfig, 1)
	mc.launchTask(&masterv1.Task{Id: "good", Container: &agentv1.LaunchContainerRequest{ContainerId: "good", Image: "busybox",
		Env: []string{"A=1"}, User: proto.String("7"), Labels: map[string]string{"team": "core"}}})
	cfg := <-fake.launching
	if cfg.ID != "good" || cfg.Env[0] != "A=1" || *cfg.User != "7" || cfg.Labels["team"] != "core" || cfg.Labels[LabelTask] != "true" {
		t.Errorf("launched %+v", cfg)
	}
}

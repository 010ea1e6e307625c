package agent

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gearboxd/gearbox/containerizer"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Status updates are checkpointed in order, survive a restart of the
// agent in that order, and go once acknowledged.
func TestStatusUpdatesAreCheckpointed(t *testing.T) {
	dir := t.TempDir()
	cp, err := newCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	deps := masterDeps{cp: cp, log: slog.New(slog.DiscardHandler)}
	mc, err := newMasterClient("127.0.0.1:1", deps)
	if err != nil {
		t.Fatal(err)
	}
	task := func(id string, st containerizer.TaskState) containerizer.Container {
		return containerizer.Container{ID: containerizer.ContainerID(id), State: st, Labels: map[string]string{LabelTask: "true"}}
	}
	mc.observe(task("t1", containerizer.TaskStarting), false)
	mc.observe(task("t1", containerizer.TaskStarting), false) // no change: no update
	mc.observe(task("t1", containerizer.TaskRunning), false)
	mc.observe(containerizer.Container{ID: "plain", State: containerizer.TaskRunning}, false) // not a task
	mc.observe(task("t2", containerizer.TaskRunning), false)
	mc.observe(task("t1", containerizer.TaskFinished), false)
	if n := mc.pendingCount(); n != 4 {
		t.Fatalf("%d updates pending, want 4", n)
	}
	mc.acked(mc.pending[0].UUID)

	// A new agent on the same work dir: the same three, in order.
	mc2, err := newMasterClient("127.0.0.1:1", deps)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range mc2.pending {
		got = append(got, u.TaskID+" "+u.State.String())
	}
	want := []string{"t1 TASK_RUNNING", "t2 TASK_RUNNING", "t1 TASK_FINISHED"}
	if len(got) != len(want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("after a restart: %v, want %v", got, want)
		}
	}
	// Seq numbers go on from the highest kept; the same state is not
	// queued twice across the restart.
	mc2.observe(task("t1", containerizer.TaskFinished), false)
	mc2.observe(task("t3", containerizer.TaskRunning), false)
	if last := mc2.pending[len(mc2.pending)-1]; last.TaskID != "t3" || last.Seq <= mc2.pending[len(mc2.pending)-2].Seq {
		t.Errorf("new update after a restart: %+v", last)
	}
	for _, u := range append([]*pendingUpdate(nil), mc2.pending...) {
		mc2.acked(u.UUID)
	}
	left, _ := os.ReadDir(filepath.Join(dir, "meta", "updates"))
	if len(left) != 0 {
		t.Errorf("files left after every ack: %v", left)
	}
}

// An update an older agent checkpointed, when states were strings in Go,
// loads as the same state and reason; a new one is written by name, so
// that an older agent reads it too.
func TestCheckpointedUpdateKeepsItsFormat(t *testing.T) {
	dir := t.TempDir()
	cp, err := newCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	deps := masterDeps{cp: cp, log: slog.New(slog.DiscardHandler)}
	os.MkdirAll(filepath.Join(dir, "meta", "updates"), 0o700)
	old := `{"seq":7,"uuid":"0f","task_id":"web","state":"TASK_FAILED","reason":"REASON_CONTAINER_LAUNCH_FAILED","message":"no such image","time":"2026-01-02T03:04:05Z"}`
	os.WriteFile(filepath.Join(dir, "meta", "updates", "00000000000000000007.json"), []byte(old), 0o600)
	mc, err := newMasterClient("127.0.0.1:1", deps)
	if err != nil {
		t.Fatal(err)
	}
	if len(mc.pending) != 1 {
		t.Fatalf("%d updates loaded, want 1", len(mc.pending))
	}
	if u := mc.pending[0]; u.State != typesv1.TaskState_TASK_FAILED || u.Reason != typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED || u.Message != "no such image" {
		t.Errorf("old update loaded as %+v", u)
	}

	mc.observe(containerizer.Container{ID: "db", State: containerizer.TaskRunning, Labels: map[string]string{LabelTask: "true"}}, false)
	data, err := os.ReadFile(mc.updatePath(mc.pending[1]))
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	if err := json.Unmarshal(data, &rec); err != nil {
		t.Fatal(err)
	}
	if rec["state"] != "TASK_RUNNING" {
		t.Errorf("state written as %#v, want \"TASK_RUNNING\"", rec["state"])
	}
	if r, ok := rec["reason"]; ok {
		t.Errorf("no reason written as %#v, want it left out as before", r)
	}
}

func TestCorruptUpdateFileStopsTheAgent(t *testing.T) {
	dir := t.TempDir()
	cp, _ := newCheckpoint(dir)
	deps := masterDeps{cp: cp, log: slog.New(slog.DiscardHandler)}
	os.MkdirAll(filepath.Join(dir, "meta", "updates"), 0o700)
	os.WriteFile(filepath.Join(dir, "meta", "updates", "00000000000000000001.json"), []byte("{not json"), 0o600)
	if _, err := newMasterClient("127.0.0.1:1", deps); err == nil || !errors.Is(err, ErrCorruptCheckpoint) {
		t.Fatalf("corrupt update file: %v", err)
	}
}

// A launch that fails on an ID some non-task container holds ends
// TASK_FAILED naming that container; the task's own container reports for
// itself, and again once it has ended.
func TestAfterFailedLaunch(t *testing.T) {
	exists := errors.New(`container "db" already exists`)
	local := containerizer.Container{ID: "db", State: containerizer.TaskRunning}
	task := func(st containerizer.TaskState) containerizer.Container {
		return containerizer.Container{ID: "db", State: st, Labels: map[string]string{LabelTask: "true"}}
	}
	u := afterFailedLaunch("db", exists, local, nil)
	if u == nil || u.State != containerizer.TaskFailed || u.Reason != containerizer.ReasonContainerLaunchFailed ||
		!strings.Contains(u.Message, "container named db") || !strings.Contains(u.Message, "not this task's") {
		t.Errorf("collision with a local container: %+v", u)
	}
	if u := afterFailedLaunch("db", exists, task(containerizer.TaskRunning), nil); u != nil {
		t.Errorf("the task's running container reports for itself, got %+v", u)
	}
	code := int32(0)
	fin := task(containerizer.TaskFinished)
	fin.ExitCode = &code
	if u := afterFailedLaunch("db", exists, fin, nil); u == nil || u.State != containerizer.TaskFinished || u.ExitCode == nil {
		t.Errorf("the task's ended container: %+v, want its end said again", u)
	}
	noImage := errors.New(`image "x" is not present on this agent`)
	if u := afterFailedLaunch("db", noImage, containerizer.Container{}, errors.New("not found")); u == nil ||
		u.State != containerizer.TaskFailed || u.Message != noImage.Error() {
		t.Errorf("a launch that created nothing: %+v", u)
	}
}

package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/containerizer"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// A task's restarts reach the master as non-terminal updates (TASK_RUNNING
// with a message, the exit's reason, the count and the last exit); only the
// final end is terminal. The updates survive an agent restart, and a
// recovered container's unchanged state is not sent twice.
func TestTaskRestartUpdates(t *testing.T) {
	dir := t.TempDir()
	mc := newTestMasterClient(t, dir, newFake(), ResourceSet{})
	labels := map[string]string{LabelTask: "true"}
	code := int32(137)
	oom := &containerizer.ProcessExit{ExitCode: &code, State: containerizer.TaskFailed, Reason: typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY,
		Message: "the kernel killed the container for its memory limit", Time: time.Now()}
	running := containerizer.Container{ID: "t", State: containerizer.TaskRunning, Labels: labels}
	waiting := running
	waiting.State, waiting.Reason, waiting.LastExit = containerizer.TaskStarting, oom.Reason, oom
	waiting.Message, waiting.NextRestartAt = "restarting after an OOM kill (restart 1 of 2)", time.Now().Add(time.Second)
	again := running
	again.RestartCount, again.LastExit = 1, oom
	final := again
	final.State, final.Reason, final.ExitCode, final.Message = containerizer.TaskFailed, containerizer.ReasonCommandExited, &code, "exited; gave up"
	for _, c := range []containerizer.Container{running, waiting, waiting, again, again} {
		mc.observe(c, false)
	}
	// The agent restarts: what it recovers unchanged is not news.
	mc = newTestMasterClient(t, dir, newFake(), ResourceSet{})
	mc.observe(again, false)
	mc.observe(final, false)

	var got []string
	for _, u := range mc.pending {
		got = append(got, fmt.Sprintf("%s %s %d %v", u.State, u.Reason, u.RestartCount, u.LastExit != nil))
	}
	want := []string{
		"TASK_RUNNING REASON_UNSPECIFIED 0 false",
		"TASK_RUNNING REASON_CONTAINER_LIMITATION_MEMORY 0 true",
		"TASK_RUNNING REASON_UNSPECIFIED 1 true",
		"TASK_FAILED REASON_COMMAND_EXITED 1 true",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("updates:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if m := mc.pending[1].Message; !strings.Contains(m, "restarting") {
		t.Errorf("the restart's update says %q", m)
	}
	if e := mc.pending[1].LastExit; e.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY || e.ExitCode == nil || *e.ExitCode != 137 {
		t.Errorf("the restart's last exit lost the OOM kill: %+v", e)
	}
}

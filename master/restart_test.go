package master

import (
	"context"
	"strings"
	"testing"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// An agent's restart of a task is a TASK_RUNNING update with a message,
// the exit's reason, the restart count and the last exit: the master keeps
// the task running (its resources stay allocated), shows the restarts, and
// only the final end is terminal.
func TestTaskRestartUpdates(t *testing.T) {
	_, c, conn := startMaster(t, nil)
	ctx := context.Background()
	a, err := connectAgent(t, conn, &masterv1.Register{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "flaky", Image: "busybox", Resources: &masterv1.Resources{Cpus: 1}}); err != nil {
		t.Fatal(err)
	}
	a.next(t) // the launch
	code := int32(137)
	oom := &typesv1.ProcessExit{ExitCode: &code, State: typesv1.TaskState_TASK_FAILED, Reason: typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY, Message: "oom"}
	for i, st := range []*masterv1.TaskStatus{
		{State: typesv1.TaskState_TASK_RUNNING},
		{State: typesv1.TaskState_TASK_RUNNING, Reason: oom.Reason, Message: "oom; restarting (restart 1 of 2)", LastExit: oom},
		{State: typesv1.TaskState_TASK_RUNNING, RestartCount: 1, LastExit: oom},
	} {
		st.TaskId = "flaky"
		uuid := string(rune('a' + i))
		a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Update{Update: &masterv1.StatusUpdate{Uuid: uuid, Status: st}}})
		if got := a.next(t).GetAck().GetUuid(); got != uuid {
			t.Fatalf("ack %q, want %q", got, uuid)
		}
		if i == 1 {
			tk := waitTask(t, c, "flaky", typesv1.TaskState_TASK_RUNNING)
			if !strings.Contains(tk.Message, "restarting") || tk.Reason != oom.Reason || tk.LastExit.GetExitCode() != 137 {
				t.Errorf("while it restarts: %v %q, last exit %v", tk.Reason, tk.Message, tk.LastExit)
			}
			// Still allocated: a second task of 2 cpus does not fit.
			if _, err := c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "big", Image: "busybox", Resources: &masterv1.Resources{Cpus: 1.5}}); err == nil {
				t.Error("a restarting task's resources were freed")
			}
		}
	}
	tasks, err := c.GetTasks(ctx, &masterv1.GetTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tasks.Tasks {
		if tk.Id == "flaky" && (tk.RestartCount != 1 || tk.State != typesv1.TaskState_TASK_RUNNING || tk.LastExit.GetReason() != oom.Reason) {
			t.Errorf("after the restart: %v, %d restarts, last exit %v", tk.State, tk.RestartCount, tk.LastExit)
		}
	}
}

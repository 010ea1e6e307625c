//go:build bench

package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Time from a crash to the restarted process running (the exit as
// containerd reports it, to the new process started: a restart policy with
// a 1 ms constant back-off), against a plain launch of the same container
// (LaunchContainer, request to process running) in the same run.
func TestBenchRestartVsLaunch(t *testing.T) {
	const n = 10
	cmd := []string{"sh", "-c", "sleep 0.5; exit 1"}
	var launches, ends []float64
	for i := range n {
		id := fmt.Sprintf("plain-%d", i)
		start := time.Now()
		if _, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
			ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: cmd},
		}); err != nil {
			t.Fatal(err)
		}
		launches = append(launches, time.Since(start).Seconds())
		w := waitExit(t, id, time.Minute)
		// The exit as containerd saw it, to the container terminal: what
		// any exit costs (the old task's Delete waits for its logger).
		ends = append(ends, time.Since(w.FinishedAt.AsTime()).Seconds())
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	}

	p := &typesv1.RestartPolicy{Mode: typesv1.RestartMode_RESTART_MODE_ON_FAILURE, MaxRetries: n,
		Delay: durationpb.New(time.Millisecond), Factor: 1}
	launchRestart(t, "crashy", p, nil, cmd...)
	var restarts []float64
	seen := 0
	deadline := time.Now().Add(2 * time.Minute)
	for seen < n && time.Now().Before(deadline) {
		c := inspect(t, "crashy")
		if int(c.RestartCount) > seen && c.State == typesv1.TaskState_TASK_RUNNING {
			if int(c.RestartCount) == seen+1 && c.LastExit != nil {
				restarts = append(restarts, c.StartedAt.AsTime().Sub(c.LastExit.Time.AsTime()).Seconds())
			}
			seen = int(c.RestartCount)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(restarts) < n/2 {
		t.Fatalf("only %d restarts measured", len(restarts))
	}
	ml, mr := median(launches), median(restarts)
	report(t, "restart policy: crash to the restarted process running, median of %d: %.0f ms; plain launch of the same container, median of %d: %.0f ms; ratio restart/launch %.2f\n"+
		"  of which an exit's own cost (containerd's exit to the container terminal, plain container, median): %.0f ms; the rest, %.0f ms, is %.2f of a launch",
		len(restarts), mr*1000, n, ml*1000, mr/ml, median(ends)*1000, (mr-median(ends))*1000, (mr-median(ends))/ml)
}

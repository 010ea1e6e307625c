package integration

import (
	"os"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// gone waits until the container is no longer listed.
func gone(t *testing.T, id string, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		resp, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
		if err == nil {
			found := false
			for _, c := range resp.Containers {
				found = found || c.Id == id
			}
			if !found {
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}

// Sandbox GC with a 2 s delay: an ended container stays inspectable, with
// its removal time, until its sandbox goes; a container that ended before
// an agent restart goes after it (the schedule comes from finished_at); a
// running one stays.
func TestSandboxGC(t *testing.T) {
	early := launch(t, "gc-early", "true")
	waitExit(t, "gc-early", time.Minute)
	launch(t, "gc-running", "sleep", "600")
	t.Cleanup(func() { restartAgent(t, syscall.SIGTERM) })
	restartAgent(t, syscall.SIGTERM, "--gc-delay", "2s", "--disk-watch-interval", "500ms")

	late := launch(t, "gc-late", "true")
	c := waitExit(t, "gc-late", time.Minute)
	in := inspect(t, "gc-late")
	fin, due := in.GetFinishedAt().AsTime(), in.GetGcAt().AsTime()
	if in.GcAt == nil || due.Before(fin) || due.After(fin.Add(2*time.Second)) {
		t.Errorf("gc-late (%v): gc_at %v, want within 2s after finished_at %v", c.State, in.GetGcAt(), fin)
	}
	for _, id := range []string{"gc-early", "gc-late"} {
		if !gone(t, id, time.Minute) {
			t.Errorf("%s still listed a minute after it ended, with gc_delay 2s", id)
		}
	}
	for _, sb := range []string{early.Sandbox, late.Sandbox} {
		if _, err := os.Stat(sb); !os.IsNotExist(err) {
			t.Errorf("sandbox %s left behind: %v", sb, err)
		}
	}
	if c := inspect(t, "gc-running"); c.GcAt != nil || c.State.String() != "TASK_RUNNING" {
		t.Errorf("running container: %v, gc_at %v", c.State, c.GcAt)
	}
}

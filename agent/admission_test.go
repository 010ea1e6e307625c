package agent

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func launchReq(id string, cpus float64, mem int64) *agentv1.LaunchContainerRequest {
	return &agentv1.LaunchContainerRequest{ContainerId: id, Image: "busybox", Resources: &agentv1.Resources{Cpus: cpus, Memory: mem}}
}

// Launches are admitted against what the agent offers; one that does not
// fit is refused with FailedPrecondition and the numbers, and never
// reaches the containerizer.
func TestAdmissionRefusesWhatDoesNotFit(t *testing.T) {
	ts := newTestServer(t, ResourceSet{CPUs: 1, Memory: 1 << 30})
	ctx := context.Background()
	if _, err := ts.client.LaunchContainer(ctx, launchReq("a", 0.6, 256<<20)); err != nil {
		t.Fatalf("first launch: %v", err)
	}
	_, err := ts.client.LaunchContainer(ctx, launchReq("b", 0.6, 256<<20))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "cpus: asked 0.6, free 0.4 of 1") {
		t.Fatalf("launch beyond the agent's cpus: %v; want FailedPrecondition naming asked 0.6, free 0.4 of 1", err)
	}
	if ts.fake.launchCount() != 1 {
		t.Errorf("the containerizer saw %d launches, want 1: a refused launch must not reach it", ts.fake.launchCount())
	}
	// A terminal container frees what it held.
	c, _ := ts.fake.Get(ctx, "a")
	c.State = containerizer.TaskFinished
	ts.fake.put(c)
	if _, err := ts.client.LaunchContainer(ctx, launchReq("b", 0.6, 256<<20)); err != nil {
		t.Fatalf("launch once the first container ended: %v", err)
	}
	st, err := ts.client.GetState(ctx, &agentv1.GetStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetAllocated().GetCpus() != 0.6 || st.GetFree().GetMemory() != 768<<20 || st.GetTotal().GetCpus() != 1 {
		t.Errorf("GetState: total %v allocated %v free %v; want 0.6 cpus and 256 MiB allocated of 1 and 1 GiB", st.GetTotal(), st.GetAllocated(), st.GetFree())
	}
	if st.GetAgentId() != "test-agent" || st.GetDefaultRuntime() != "runc" || st.GetContainersRunning() != 1 {
		t.Errorf("GetState: agent %q runtime %q running %d", st.GetAgentId(), st.GetDefaultRuntime(), st.GetContainersRunning())
	}
}

// Two launches in flight cannot both take the last CPU: a launch holds its
// reservation until the containerizer answers.
func TestAdmissionCountsLaunchesInFlight(t *testing.T) {
	ts := newTestServer(t, ResourceSet{CPUs: 1, Memory: 1 << 30})
	ts.fake.launching = make(chan containerizer.LaunchConfig, 1)
	ts.fake.hold = make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := ts.client.LaunchContainer(context.Background(), launchReq("slow", 0.6, 0))
		first <- err
	}()
	select {
	case <-ts.fake.launching:
	case <-time.After(30 * time.Second):
		t.Fatal("the first launch never reached the containerizer")
	}
	// Were it admitted, it would wait on hold: the deadline makes that a
	// failure rather than a hang.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := ts.client.LaunchContainer(ctx, launchReq("second", 0.6, 0))
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a launch beside one in flight that holds 0.6 of 1 cpus: %v, want FailedPrecondition", err)
	}
	close(ts.fake.hold)
	if err := <-first; err != nil {
		t.Fatalf("the first launch: %v", err)
	}
	// Its reservation became its container's: still counted, once.
	st, _ := ts.client.GetState(context.Background(), &agentv1.GetStateRequest{})
	if st.GetAllocated().GetCpus() != 0.6 {
		t.Errorf("allocated %v cpus after the launch, want 0.6", st.GetAllocated().GetCpus())
	}
}

// Values no isolator could honour are refused as the containerizer says,
// before admission; reserved labels and a stopping agent are refused too.
func TestAdmissionRefusals(t *testing.T) {
	ts := newTestServer(t, ResourceSet{CPUs: 4, Memory: 1 << 30})
	ctx := context.Background()
	ts.fake.checkErr = errs.New(errdefs.ErrInvalidArgument, "memory 1 bytes: the smallest limit is 4 MiB")
	_, err := ts.client.LaunchContainer(ctx, launchReq("x", 0, 1))
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "smallest limit") {
		t.Errorf("resources the containerizer refuses: %v, want InvalidArgument with its message", err)
	}
	ts.fake.checkErr = nil
	req := launchReq("y", 0, 0)
	req.Labels = map[string]string{LabelTask: "true"}
	if _, err := ts.client.LaunchContainer(ctx, req); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a launch with label %s: %v, want InvalidArgument", LabelTask, err)
	}
	if _, err := ts.client.LaunchContainer(ctx, launchReq("../etc", 0, 0)); status.Code(err) != codes.InvalidArgument {
		t.Errorf("a launch with a bad ID: %v, want InvalidArgument", err)
	}
	if ts.fake.launchCount() != 0 {
		t.Errorf("the containerizer saw %d launches, want none", ts.fake.launchCount())
	}
	ts.srv.gate.stop()
	if _, err := ts.client.LaunchContainer(ctx, launchReq("z", 0, 0)); status.Code(err) != codes.Unavailable {
		t.Errorf("a launch while the agent stops: %v, want Unavailable", err)
	}
}

// GetHealth says what the containerizer says of containerd.
func TestHealthFollowsTheContainerizer(t *testing.T) {
	ts := newTestServer(t, ResourceSet{})
	h, err := ts.client.GetHealth(context.Background(), &agentv1.GetHealthRequest{})
	if err != nil || !h.GetHealthy() {
		t.Fatalf("health with containerd answering: %v %v", h, err)
	}
	ts.fake.mu.Lock()
	ts.fake.version = ""
	ts.fake.mu.Unlock()
	h, err = ts.client.GetHealth(context.Background(), &agentv1.GetHealthRequest{})
	if err != nil || h.GetHealthy() || !strings.Contains(h.GetMessage(), "does not answer") {
		t.Fatalf("health with containerd silent: %v %v; want unhealthy with the containerizer's message", h, err)
	}
}

package master

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestTaskSpec(t *testing.T) {
	for _, tc := range []struct {
		name string
		req  *masterv1.LaunchTaskRequest
		want *agentv1.LaunchContainerRequest // nil: refused
		msg  string
	}{
		{"older fields only", &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox", Command: []string{"true"}, Resources: &masterv1.Resources{Cpus: 1, MemoryBytes: 64}},
			&agentv1.LaunchContainerRequest{ContainerId: "t", Image: "busybox", Cmd: &agentv1.StringList{Values: []string{"true"}}, Resources: &agentv1.Resources{Cpus: 1, Memory: 64}}, ""},
		{"spec only", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{Image: "busybox", Env: []string{"A=1"}}},
			&agentv1.LaunchContainerRequest{ContainerId: "t", Image: "busybox", Env: []string{"A=1"}}, ""},
		{"both, agreeing", &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox", Resources: &masterv1.Resources{Cpus: 1},
			Container: &agentv1.LaunchContainerRequest{Image: "busybox", Resources: &agentv1.Resources{Cpus: 1, Pids: 9}}},
			&agentv1.LaunchContainerRequest{ContainerId: "t", Image: "busybox", Resources: &agentv1.Resources{Cpus: 1, Pids: 9}}, ""},
		{"images disagree", &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox", Container: &agentv1.LaunchContainerRequest{Image: "alpine"}}, nil, "disagree"},
		{"commands disagree", &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox", Command: []string{"a"},
			Container: &agentv1.LaunchContainerRequest{Cmd: &agentv1.StringList{Values: []string{"b"}}}}, nil, "disagree"},
		{"cpus disagree", &masterv1.LaunchTaskRequest{TaskId: "t", Image: "busybox", Resources: &masterv1.Resources{Cpus: 1},
			Container: &agentv1.LaunchContainerRequest{Resources: &agentv1.Resources{Cpus: 2}}}, nil, "resources.cpus"},
		{"another container ID", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{ContainerId: "u", Image: "busybox"}}, nil, "container_id"},
		{"no image", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{}}, nil, "no image"},
		// The agent's own checks (launchspec), refused here already.
		{"bad env", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{Image: "busybox", Env: []string{"=x"}}}, nil, "env entry"},
		{"negative grace", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{Image: "busybox",
			KillPolicy: &typesv1.KillPolicy{GracePeriod: durationpb.New(-time.Second)}}}, nil, "kill_policy.grace_period"},
		{"unknown pull policy", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{Image: "busybox", PullPolicy: 42}}, nil, "pull_policy"},
		{"bad window", &masterv1.LaunchTaskRequest{TaskId: "t", Container: &agentv1.LaunchContainerRequest{Image: "busybox", Size: &agentv1.WindowSize{Width: 80}}}, nil, "size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := taskSpec(tc.req)
			if tc.want == nil {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.msg) {
					t.Fatalf("%v, want InvalidArgument naming %q", err, tc.msg)
				}
				return
			}
			if err != nil || !proto.Equal(got, tc.want) {
				t.Fatalf("got %v (%v), want %v", got, err, tc.want)
			}
		})
	}
}

// A task's whole spec reaches its agent, registry credentials included;
// no operator answer and no event carries the credentials.
func TestLaunchTaskSpecAndCredentials(t *testing.T) {
	_, c, conn := startMaster(t, nil)
	ctx := context.Background()
	evs, _, _ := subscribe(t, c, 0)
	a, err := connectAgent(t, conn, &masterv1.Register{})
	if err != nil {
		t.Fatal(err)
	}
	spec := &agentv1.LaunchContainerRequest{Image: "registry.example:5000/app:1", Env: []string{"MODE=test"}, User: proto.String("1000"),
		WorkingDir: proto.String("/srv"), Log: &agentv1.LogOptions{Driver: "logrotate", MaxFiles: 2},
		Resources:  &agentv1.Resources{Cpus: 1.5, Memory: 256 << 20},
		KillPolicy: &typesv1.KillPolicy{GracePeriod: durationpb.New(5 * time.Second)}, PullPolicy: typesv1.PullPolicy_PULL_ALWAYS,
		RegistryAuth: &agentv1.RegistryAuth{Username: "deploy", Password: "s3cret-pw"}}
	if _, err := c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "app", Container: spec}); err != nil {
		t.Fatal(err)
	}
	got := a.next(t).GetLaunch().GetTask()
	want := proto.Clone(spec).(*agentv1.LaunchContainerRequest)
	want.ContainerId = "app"
	if !proto.Equal(got.GetContainer(), want) {
		t.Errorf("the agent got\n%v\nwant\n%v", got.GetContainer(), want)
	}
	// Placed by the spec's resources, and the older fields filled in for
	// older agents and clients.
	if got.GetResources().GetCpus() != 1.5 || got.GetResources().GetMemoryBytes() != 256<<20 || got.GetImage() != spec.Image {
		t.Errorf("task %v: older fields not filled from the spec", got)
	}
	_, err = c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "big", Container: &agentv1.LaunchContainerRequest{Image: "busybox", Resources: &agentv1.Resources{Cpus: 1}}})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a second task over the agent's 2 cpus: %v, want ResourceExhausted", err)
	}

	noSecret := func(where string, m proto.Message) {
		t.Helper()
		b, _ := protojson.Marshal(m)
		if strings.Contains(string(b), "s3cret-pw") || strings.Contains(string(b), "registry_auth") || strings.Contains(string(b), "registryAuth") {
			t.Errorf("%s carries the registry credentials: %s", where, b)
		}
		if !strings.Contains(string(b), "MODE=test") {
			t.Errorf("%s lacks the task's spec: %s", where, b)
		}
	}
	tasks, err := c.GetTasks(ctx, &masterv1.GetTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	noSecret("GetTasks", tasks)
	st, _ := c.GetState(ctx, &masterv1.GetStateRequest{})
	noSecret("GetState", st)
	r, _ := c.ReconcileTasks(ctx, &masterv1.ReconcileTasksRequest{TaskIds: []string{"app"}})
	noSecret("ReconcileTasks", r)
	a.update("u1", "app", typesv1.TaskState_TASK_RUNNING)
	waitTask(t, c, "app", typesv1.TaskState_TASK_RUNNING)
	seen := 0
	for seen < 2 {
		select {
		case e := <-evs:
			if e.GetTask().GetId() == "app" {
				noSecret(e.GetType().String(), e)
				seen++
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("saw %d events of the task, want its TASK_ADDED and TASK_UPDATED", seen)
		}
	}
	// A kill that names no grace leaves it to the task's kill policy (on
	// the agent); one that names it, even zero, says so.
	if _, err := c.KillTask(ctx, &masterv1.KillTaskRequest{TaskId: "app"}); err != nil {
		t.Fatal(err)
	}
	nextKill := func() *masterv1.KillTask {
		for {
			if k := a.next(t).GetKill(); k != nil {
				return k
			}
		}
	}
	if k := nextKill(); k.GetTaskId() != "app" || k.GracePeriod != nil {
		t.Errorf("kill without a grace: %v, want none named (the kill policy's)", k)
	}
	if _, err := c.KillTask(ctx, &masterv1.KillTaskRequest{TaskId: "app", GracePeriod: durationpb.New(0)}); err != nil {
		t.Fatal(err)
	}
	if k := nextKill(); k.GracePeriod == nil || k.GracePeriod.AsDuration() != 0 {
		t.Errorf("kill with grace 0: %v, want grace 0 named (SIGKILL now)", k)
	}
}

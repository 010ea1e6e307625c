// Package storetest is the contract suite every master Store passes: the
// bbolt one and the etcd one (master/store/etcdstore, against a real etcd).
package storetest

import (
	"context"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/master/store"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Opener opens the store under test; called again after Close it must
// open the same registry (what a restarted master sees).
type Opener func(t *testing.T) store.Store

// Run runs the suite.
func Run(t *testing.T, open Opener) {
	ctx := context.Background()
	now := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	agent := store.Agent{
		ID: "a-2", Hostname: "node2", Address: "10.0.0.2:7443", Version: "v1",
		Resources: store.Resources{CPUs: 4, Memory: 8 << 30, Disk: 100 << 30}, Attributes: map[string]string{"rack": "r1"},
		State: store.AgentActive, RegisteredAt: now,
	}
	task := store.Task{
		ID: "t-1", AgentID: "a-2", Image: "localhost/demo:latest", Command: []string{"sleep", "10"},
		Resources: store.Resources{CPUs: 0.5, Memory: 64 << 20}, PartitionAware: true,
		State: typesv1.TaskState_TASK_RUNNING, CreatedAt: now, UpdatedAt: now.Add(time.Second),
		// The whole spec, credentials included: the registry keeps them.
		Container: &store.Container{Spec: &agentv1.LaunchContainerRequest{
			ContainerId: "t-1", Image: "localhost/demo:latest", Cmd: &agentv1.StringList{Values: []string{"sleep", "10"}},
			Env: []string{"A=1"}, WorkingDir: proto.String("/w"), User: proto.String("1:2"), Labels: map[string]string{"k": "v"},
			Log:        &agentv1.LogOptions{Driver: "logrotate", MaxSize: 1 << 20},
			Resources:  &agentv1.Resources{Cpus: 0.5, Memory: 64 << 20},
			KillPolicy: &typesv1.KillPolicy{GracePeriod: durationpb.New(3 * time.Second)},
			PullPolicy: typesv1.PullPolicy_PULL_ALWAYS, RegistryAuth: &agentv1.RegistryAuth{Username: "u", Password: "p"},
		}},
	}

	first := agent
	first.ID, first.Hostname = "a-1", "node1"
	code := int32(3)
	done := task
	done.ID, done.State, done.ExitCode, done.KillRequested = "t-9", typesv1.TaskState_TASK_FAILED, &code, true
	done.Reason = typesv1.Reason_REASON_COMMAND_EXITED
	done.Container = nil // as older masters wrote them
	check := func(s store.Store, step string, wantAgents []store.Agent, wantTasks []store.Task) {
		t.Helper()
		as, err := s.Agents(ctx)
		if err != nil || !reflect.DeepEqual(as, wantAgents) {
			t.Fatalf("%s: agents %+v (%v), want %+v", step, as, err, wantAgents)
		}
		ts, err := s.Tasks(ctx)
		if err != nil || !tasksEqual(ts, wantTasks) {
			t.Fatalf("%s: tasks %+v (%v), want %+v", step, ts, err, wantTasks)
		}
	}

	s := open(t)
	check(s, "a new store", nil, nil)
	if err := s.Apply(ctx, store.Batch{Agents: []store.Agent{agent, first}, Tasks: []store.Task{done, task}}); err != nil {
		t.Fatal(err)
	}
	check(s, "one batch, listed by ID", []store.Agent{first, agent}, []store.Task{task, done})

	gone := agent
	gone.State, gone.GoneByOperator, gone.Identity = store.AgentGone, true, "node2-cert"
	if err := s.Apply(ctx, store.Batch{Agents: []store.Agent{gone}}); err != nil {
		t.Fatal(err)
	}
	check(s, "an agent replaced", []store.Agent{first, gone}, []store.Task{task, done})

	if err := s.Apply(ctx, store.Batch{DeleteTasks: []string{"t-9", "never-stored"}, DeleteAgents: []string{first.ID}}); err != nil {
		t.Fatalf("deleting, one ID absent: %v", err)
	}
	check(s, "deleted", []store.Agent{gone}, []store.Task{task})

	other := task
	other.ID = "t-5"
	if err := s.Apply(ctx, store.Batch{Tasks: []store.Task{other, {}}}); err == nil {
		t.Error("a batch with an empty task ID was applied")
	}
	check(s, "a refused batch writes nothing", []store.Agent{gone}, []store.Task{task})

	fw := store.Framework{ID: "fw-2", Name: "sleep", Roles: []string{"web"}, Principal: "sleeper",
		FailoverTimeout: time.Minute, PartitionAware: true, RegisteredAt: now, SuppressedRoles: []string{"web"}}
	fw1 := fw
	fw1.ID, fw1.Roles, fw1.SuppressedRoles = "fw-1", []string{"*"}, nil
	ftask := task
	ftask.ID, ftask.FrameworkID, ftask.Role, ftask.GroupID = "t-7", "fw-2", "web", "t-7"
	ftask.Container = &store.Container{Spec: &agentv1.LaunchContainerRequest{ContainerId: "t-7", Image: "busybox"}}
	ftask.Pending = []store.Update{{UUID: "u-1", State: typesv1.TaskState_TASK_RUNNING, Timestamp: now},
		{UUID: "u-2", State: typesv1.TaskState_TASK_FAILED, Reason: typesv1.Reason_REASON_COMMAND_EXITED, ExitCode: &code, Timestamp: now}}
	if err := s.Apply(ctx, store.Batch{Frameworks: []store.Framework{fw, fw1}, Tasks: []store.Task{ftask},
		Weights: map[string]float64{"web": 2, "batch": 0.5}}); err != nil {
		t.Fatal(err)
	}
	checkFw := func(s store.Store, step string, want []store.Framework, wantW map[string]float64) {
		t.Helper()
		fs, err := s.Frameworks(ctx)
		if err != nil || !reflect.DeepEqual(fs, want) {
			t.Fatalf("%s: frameworks %+v (%v), want %+v", step, fs, err, want)
		}
		ws, err := s.Weights(ctx)
		if err != nil || !reflect.DeepEqual(ws, wantW) {
			t.Fatalf("%s: weights %v (%v), want %v", step, ws, err, wantW)
		}
	}
	checkFw(s, "frameworks and weights", []store.Framework{fw1, fw}, map[string]float64{"web": 2, "batch": 0.5})
	check(s, "a framework's task with its pending updates", []store.Agent{gone}, []store.Task{task, ftask})
	if err := s.Apply(ctx, store.Batch{DeleteFrameworks: []string{"fw-1", "fw-never"}, Weights: map[string]float64{"batch": 0}}); err != nil {
		t.Fatal(err)
	}
	checkFw(s, "a framework removed, a weight back to the default", []store.Framework{fw}, map[string]float64{"web": 2})

	// What a restarted master reads.
	s.Close()
	s = open(t)
	defer s.Close()
	check(s, "after reopening", []store.Agent{gone}, []store.Task{task, ftask})
	checkFw(s, "after reopening", []store.Framework{fw}, map[string]float64{"web": 2})
}

// tasksEqual compares tasks field by field, their container specs as
// protobuf messages.
func tasksEqual(a, b []store.Task) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if (x.Container == nil) != (y.Container == nil) {
			return false
		}
		if x.Container != nil && !proto.Equal(x.Container.Spec, y.Container.Spec) {
			return false
		}
		x.Container, y.Container = nil, nil
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

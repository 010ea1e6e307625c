// Package storetest is the contract suite every master Store passes: the
// bbolt one now, an etcd one later.
package storetest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/master/store"
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
		State: "TASK_RUNNING", CreatedAt: now, UpdatedAt: now.Add(time.Second),
	}

	t.Run("round trip and order", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		first := agent
		first.ID, first.Hostname = "a-1", "node1"
		for _, a := range []store.Agent{agent, first} {
			if err := s.PutAgent(ctx, a); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.GetAgent(ctx, agent.ID)
		if err != nil || !reflect.DeepEqual(got, agent) {
			t.Fatalf("agent: %+v %v", got, err)
		}
		as, err := s.Agents(ctx)
		if err != nil || len(as) != 2 || as[0].ID != "a-1" || as[1].ID != "a-2" {
			t.Fatalf("agents: %+v %v", as, err)
		}
		if err := s.PutTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		gt, err := s.GetTask(ctx, task.ID)
		if err != nil || !reflect.DeepEqual(gt, task) {
			t.Fatalf("task: %+v %v", gt, err)
		}
		// Replace.
		gone := agent
		gone.State, gone.GoneByOperator = store.AgentGone, true
		if err := s.PutAgent(ctx, gone); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.GetAgent(ctx, agent.ID); got.State != store.AgentGone || !got.GoneByOperator {
			t.Errorf("replaced agent: %+v", got)
		}
	})

	t.Run("not found", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		if _, err := s.GetAgent(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get agent: %v", err)
		}
		if _, err := s.GetTask(ctx, "nothing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("get task: %v", err)
		}
		if err := s.DeleteTask(ctx, "nothing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("delete task: %v", err)
		}
		if err := s.PutTask(ctx, store.Task{}); err == nil {
			t.Error("a task without an ID was stored")
		}
	})

	t.Run("survives a restart", func(t *testing.T) {
		s := open(t)
		if err := s.PutTask(ctx, task); err != nil {
			t.Fatal(err)
		}
		other := task
		other.ID = "t-2"
		s.PutTask(ctx, other)
		if err := s.DeleteTask(ctx, "t-2"); err != nil {
			t.Fatal(err)
		}
		s.Close()
		s = open(t)
		defer s.Close()
		ts, err := s.Tasks(ctx)
		if err != nil || len(ts) != 1 || !reflect.DeepEqual(ts[0], task) {
			t.Fatalf("tasks after reopening: %+v %v", ts, err)
		}
		if a, err := s.GetAgent(ctx, agent.ID); err != nil || a.Hostname != "node2" {
			t.Errorf("agent after reopening: %+v %v", a, err)
		}
	})

	t.Run("batch", func(t *testing.T) {
		s := open(t)
		defer s.Close()
		code := int32(3)
		done := task
		done.ID, done.State, done.ExitCode, done.KillRequested = "t-9", "TASK_FAILED", &code, true
		if err := s.Apply(ctx, store.Batch{Agents: []store.Agent{agent}, Tasks: []store.Task{task, done}}); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetTask(ctx, "t-9"); err != nil || !reflect.DeepEqual(got, done) {
			t.Fatalf("task of a batch: %+v %v", got, err)
		}
		if err := s.Apply(ctx, store.Batch{DeleteTasks: []string{"t-9", "never-stored"}, DeleteAgents: []string{agent.ID}}); err != nil {
			t.Fatalf("deleting in a batch (one ID absent): %v", err)
		}
		if _, err := s.GetTask(ctx, "t-9"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted task: %v", err)
		}
		if _, err := s.GetAgent(ctx, agent.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("deleted agent: %v", err)
		}
		if err := s.Apply(ctx, store.Batch{Tasks: []store.Task{task, {}}}); err == nil {
			t.Error("a batch with an empty task ID was applied")
		}
	})
}

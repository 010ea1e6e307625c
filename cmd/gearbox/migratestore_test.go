package main

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/internal/etcdtest"
	"github.com/gearboxd/gearbox/master/store"
	"github.com/gearboxd/gearbox/master/store/etcdstore"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// A registry a bbolt master wrote moves into etcd whole; a second copy is
// refused unless --force; a master running on the file stops the copy.
func TestMigrateStore(t *testing.T) {
	c, err := etcdtest.Start(t.TempDir(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)
	b := store.Batch{
		Agents: []store.Agent{{ID: "a-1", Hostname: "n1", State: store.AgentActive, RegisteredAt: now},
			{ID: "a-2", Hostname: "n2", State: store.AgentGone, GoneByOperator: true, RegisteredAt: now}},
		Tasks: []store.Task{{ID: "t-1", AgentID: "a-1", Image: "busybox", State: typesv1.TaskState_TASK_RUNNING,
			FrameworkID: "fw-1", Role: "web", CreatedAt: now, UpdatedAt: now}},
		Frameworks: []store.Framework{{ID: "fw-1", Name: "sleep", Roles: []string{"web"}, FailoverTimeout: time.Hour, RegisteredAt: now}},
		Weights:    map[string]float64{"web": 2, "eng/batch": 0.5},
	}
	bolt, err := store.OpenBolt(filepath.Join(dir, "registry.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := bolt.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetArgs(append([]string{"master", "migrate-store", "--work-dir", dir,
			"--etcd-endpoints", strings.Join(c.Endpoints(), ","), "--etcd-prefix", "/moved"}, args...))
		err := root.Execute()
		return out.String(), err
	}
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "another master") {
		t.Fatalf("with the file held by a master: %v", err)
	}
	bolt.Close()
	out, err := run()
	if err != nil || !strings.Contains(out, "copied 2 agents, 1 tasks, 1 frameworks and 2 role weights") {
		t.Fatalf("migrate: %q %v", out, err)
	}
	s, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints(), Prefix: "/moved/"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	as, _ := s.Agents(ctx)
	ts, _ := s.Tasks(ctx)
	fs, _ := s.Frameworks(ctx)
	ws, err := s.Weights(ctx)
	if err != nil || !reflect.DeepEqual(as, b.Agents) || !reflect.DeepEqual(ts, b.Tasks) || !reflect.DeepEqual(fs, b.Frameworks) || !reflect.DeepEqual(ws, b.Weights) {
		t.Fatalf("in etcd: %+v %+v %+v %v (%v)", as, ts, fs, ws, err)
	}

	// An entry only etcd holds: a second copy is refused, --force replaces.
	if err := s.Apply(ctx, store.Batch{Tasks: []store.Task{{ID: "t-etcd-only", AgentID: "a-1"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := run(); !errors.Is(err, etcdstore.ErrHoldsRegistry) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("copying again: %v", err)
	}
	if out, err := run("--force"); err != nil || !strings.Contains(out, "copied 2 agents") {
		t.Fatalf("copying again with --force: %q %v", out, err)
	}
	if ts, err := s.Tasks(ctx); err != nil || len(ts) != 1 || ts[0].ID != "t-1" {
		t.Fatalf("after --force: %+v (%v)", ts, err)
	}

	// While a master leads on the prefix, nothing is copied.
	cli := s.Client()
	if _, err := cli.Put(ctx, "/moved/leader/694d1", "m1"); err != nil {
		t.Fatal(err)
	}
	if _, err := run("--force"); err == nil || !strings.Contains(err.Error(), "a master leads") {
		t.Fatalf("with a leader: %v", err)
	}
}

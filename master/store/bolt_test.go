package store_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gearboxd/gearbox/master/store"
	"github.com/gearboxd/gearbox/master/store/storetest"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestBoltContract(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := store.OpenBolt(path, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// A second master on the same work dir is told why it cannot start.
func TestBoltHeldByAnother(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := store.OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := store.OpenBolt(path, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "another master") {
		t.Errorf("second open: %v", err)
	}
}

// A registry written by a newer schema is refused, not misread.
func TestBoltNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		b, _ := tx.CreateBucketIfNotExists([]byte("meta"))
		return b.Put([]byte("schema_version"), []byte("99"))
	})
	db.Close()
	if _, err := store.OpenBolt(path, time.Second); err == nil || !strings.Contains(err.Error(), "schema version") {
		t.Errorf("newer schema: %v", err)
	}
}

// A registry an older master wrote, when task states and reasons were
// strings in Go, reads back with the same states and reasons, and what
// this master writes is the same record.
func TestBoltReadsOlderTaskRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	old := map[string]string{
		"t-1": `{"id":"t-1","agent_id":"a-1","image":"demo","resources":{"cpus":0.5},"partition_aware":true,"state":"TASK_RUNNING","created_at":"2026-11-25T09:00:00Z","updated_at":"2026-11-25T09:00:01Z"}`,
		"t-2": `{"id":"t-2","agent_id":"a-1","image":"demo","resources":{},"state":"TASK_FAILED","reason":"REASON_COMMAND_EXITED","message":"exited with status 3","exit_code":3,"created_at":"2026-11-25T09:00:00Z","updated_at":"2026-11-25T09:00:02Z"}`,
	}
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, _ := tx.CreateBucketIfNotExists([]byte("meta"))
		meta.Put([]byte("schema_version"), []byte("1"))
		b, err := tx.CreateBucketIfNotExists([]byte("tasks"))
		if err != nil {
			return err
		}
		for k, v := range old {
			if err := b.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	s, err := store.OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	tasks, err := s.Tasks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) != 2 {
		t.Fatalf("%d tasks read, want 2: %+v", len(tasks), tasks)
	}
	if got := tasks[0]; got.State != typesv1.TaskState_TASK_RUNNING || got.Reason != typesv1.Reason_REASON_UNSPECIFIED || !got.PartitionAware {
		t.Errorf("t-1 read as %+v", got)
	}
	if got := tasks[1]; got.State != typesv1.TaskState_TASK_FAILED || got.Reason != typesv1.Reason_REASON_COMMAND_EXITED ||
		got.ExitCode == nil || *got.ExitCode != 3 || got.Message != "exited with status 3" {
		t.Errorf("t-2 read as %+v", got)
	}
	// Written back unchanged, the records are the older master's bytes.
	if err := s.Apply(context.Background(), store.Batch{Tasks: tasks}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err = bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		for k, v := range old {
			if got := string(tx.Bucket([]byte("tasks")).Get([]byte(k))); got != v {
				t.Errorf("%s written as\n%s\nwant\n%s", k, got, v)
			}
		}
		return nil
	})
}

// A state this master does not know (a newer one wrote it) is refused with
// the entry named, not read as some other state.
func TestBoltUnknownTaskState(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.db")
	s, err := store.OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("tasks")).Put([]byte("t-1"), []byte(`{"id":"t-1","state":"TASK_FROM_A_NEWER_GEARBOX"}`))
	})
	db.Close()
	s, err = store.OpenBolt(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Tasks(context.Background()); err == nil || !strings.Contains(err.Error(), `"t-1"`) || !strings.Contains(err.Error(), "TASK_FROM_A_NEWER_GEARBOX") {
		t.Errorf("unknown state: %v", err)
	}
}

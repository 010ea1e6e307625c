package store_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/gearboxd/gearbox/master/store"
	"github.com/gearboxd/gearbox/master/store/storetest"
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

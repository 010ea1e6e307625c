package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	bolt "go.etcd.io/bbolt"
)

// schemaVersion is written in the meta bucket; a file from a newer gearbox
// is refused rather than misread.
const schemaVersion = 1

var (
	bucketMeta       = []byte("meta")
	bucketAgents     = []byte("agents")
	bucketTasks      = []byte("tasks")
	bucketFrameworks = []byte("frameworks")
	bucketWeights    = []byte("weights")
	keySchema        = []byte("schema_version")
)

// Bolt is a Store in an embedded bbolt file. Values are JSON. Every write
// is durable when it returns: bbolt fdatasyncs each committed transaction
// (Options.NoSync, NoGrowSync and NoFreelistSync are left false), so an
// update the master acknowledged survives a power loss.
type Bolt struct {
	db *bolt.DB
}

// OpenBolt opens (or creates) the registry file at path. Only one process
// may hold it: a second master on the same file waits up to timeout, then
// fails with a message that says so.
func OpenBolt(path string, timeout time.Duration) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("registry %s is held by another process (is another master running on this work dir?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening registry %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketAgents, bucketTasks, bucketFrameworks, bucketWeights} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keySchema); v != nil {
			n, err := strconv.Atoi(string(v))
			if err != nil || n > schemaVersion {
				return fmt.Errorf("registry %s has schema version %q; this gearbox reads version %d (use the gearbox that wrote it, or move the file aside to start empty)", path, v, schemaVersion)
			}
			return nil
		}
		return meta.Put(keySchema, []byte(strconv.Itoa(schemaVersion)))
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	return &Bolt{db: db}, nil
}

func (b *Bolt) Close() error { return b.db.Close() }

// all decodes every value of a bucket, in key order.
func all[T any](db *bolt.DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, data []byte) error {
			v, err := Decode[T](string(bucket), string(k), data)
			out = append(out, v)
			return err
		})
	})
	return out, err
}

func (b *Bolt) Agents(context.Context) ([]Agent, error) { return all[Agent](b.db, bucketAgents) }

func (b *Bolt) Tasks(context.Context) ([]Task, error) { return all[Task](b.db, bucketTasks) }

func (b *Bolt) Frameworks(context.Context) ([]Framework, error) {
	return all[Framework](b.db, bucketFrameworks)
}

func (b *Bolt) Weights(context.Context) (map[string]float64, error) {
	out := map[string]float64{}
	err := b.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWeights).ForEach(func(k, v []byte) error {
			w, err := DecodeWeight(string(k), v)
			out[string(k)] = w
			return err
		})
	})
	return out, err
}

func (b *Bolt) Apply(_ context.Context, bt Batch) error {
	writes, err := bt.Encode()
	if err != nil {
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
		for _, w := range writes {
			bk := tx.Bucket([]byte(w.Kind))
			if w.Value == nil {
				if err := bk.Delete([]byte(w.ID)); err != nil {
					return err
				}
				continue
			}
			if err := bk.Put([]byte(w.ID), w.Value); err != nil {
				return err
			}
		}
		return nil
	})
}

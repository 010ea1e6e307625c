package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gearboxd/gearbox/master/store"
)

// ErrHoldsRegistry: Migrate found entries under the prefix already.
var ErrHoldsRegistry = errors.New("the etcd prefix already holds a registry")

// migrateTimeout bounds a migration whose context has no deadline: a large
// registry takes many transactions.
const migrateTimeout = 5 * time.Minute

// Copied counts the entries a migration copied.
type Copied struct {
	Agents, Tasks, Frameworks, Weights int
}

// Migrate copies every agent, task, framework and weight of from (a
// master's bbolt registry) under the store's prefix. It refuses while a
// master leads on the prefix (a key under PREFIX leader), and when the
// prefix already holds registry entries unless force, which deletes them
// first (the copy then replaces them; it is not one transaction, so run it
// again if it fails).
func (s *Store) Migrate(ctx context.Context, from store.Store, force bool) (Copied, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, migrateTimeout)
		defer cancel()
	}
	var b store.Batch
	var err error
	if b.Agents, err = from.Agents(ctx); err != nil {
		return Copied{}, err
	}
	if b.Tasks, err = from.Tasks(ctx); err != nil {
		return Copied{}, err
	}
	if b.Frameworks, err = from.Frameworks(ctx); err != nil {
		return Copied{}, err
	}
	if b.Weights, err = from.Weights(ctx); err != nil {
		return Copied{}, err
	}
	if err := s.makeRoom(ctx, force); err != nil {
		return Copied{}, err
	}
	if err := s.Apply(ctx, b); err != nil {
		return Copied{}, err
	}
	return Copied{Agents: len(b.Agents), Tasks: len(b.Tasks), Frameworks: len(b.Frameworks), Weights: len(b.Weights)}, nil
}

// makeRoom checks that no master leads on the prefix and that it holds no
// registry, or (force) deletes the registry it holds.
func (s *Store) makeRoom(ctx context.Context, force bool) error {
	leaders := s.cfg.Prefix + "leader"
	ops := []clientv3.Op{clientv3.OpGet(leaders, clientv3.WithPrefix(), clientv3.WithCountOnly())}
	for _, kind := range store.Kinds {
		ops = append(ops, clientv3.OpGet(s.cfg.Prefix+kind+"/", clientv3.WithPrefix(), clientv3.WithCountOnly()))
	}
	var resp *clientv3.TxnResponse
	err := s.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Txn(ctx).Then(ops...).Commit()
		return err
	})
	if err != nil {
		return s.wrap(ctx, "reading the registry", err)
	}
	if resp.Responses[0].GetResponseRange().GetCount() > 0 {
		return fmt.Errorf("a master leads on etcd at %s (keys under %s): stop every master using prefix %s before migrating", s.endpoints(), leaders, s.cfg.Prefix)
	}
	var held int64
	for _, r := range resp.Responses[1:] {
		held += r.GetResponseRange().GetCount()
	}
	if held == 0 {
		return nil
	}
	if !force {
		return fmt.Errorf("etcd at %s holds %d registry entries under %s: %w (give --force to replace them, or another --etcd-prefix)", s.endpoints(), held, s.cfg.Prefix, ErrHoldsRegistry)
	}
	dels := []clientv3.Op{s.written()}
	for _, kind := range store.Kinds {
		dels = append(dels, clientv3.OpDelete(s.cfg.Prefix+kind+"/", clientv3.WithPrefix()))
	}
	err = s.retry(ctx, func(ctx context.Context) error {
		_, err := s.cli.Txn(ctx).Then(dels...).Commit()
		return err
	})
	if err != nil {
		return s.wrap(ctx, "deleting the registry held under "+s.cfg.Prefix, err)
	}
	return nil
}

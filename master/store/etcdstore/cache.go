package etcdstore

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gearboxd/gearbox/master/store"
)

// pageSize is how many entries one read of a reload asks for.
const pageSize = 500

// cache is the registry as of etcd revision rev: kind → ID → stored value.
type cache struct {
	mu      sync.Mutex
	rev     int64
	entries map[string]map[string][]byte
	// changed is closed (and replaced) whenever rev moves.
	changed chan struct{}
}

func emptyEntries() map[string]map[string][]byte {
	e := map[string]map[string][]byte{}
	for _, k := range store.Kinds {
		e[k] = map[string][]byte{}
	}
	return e
}

func (c *cache) init() { c.entries, c.changed = emptyEntries(), make(chan struct{}) }

func (c *cache) moved() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// state is the cache's revision and a channel closed when it moves.
func (c *cache) state() (int64, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev, c.changed
}

func (c *cache) revision() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rev
}

// replace installs a whole registry read at rev, unless the cache is newer.
func (c *cache) replace(rev int64, entries map[string]map[string][]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rev <= c.rev {
		return
	}
	c.rev, c.entries = rev, entries
	c.moved()
}

// applyEvents applies a watch response's events; those the cache already
// holds (it was reloaded past them) are skipped.
func (c *cache) applyEvents(prefix string, evs []*clientv3.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	base := c.rev
	for _, ev := range evs {
		if ev.Kv.ModRevision <= base {
			continue
		}
		if kind, id, ok := parseKey(prefix, string(ev.Kv.Key)); ok {
			if ev.Type == clientv3.EventTypeDelete {
				delete(c.entries[kind], id)
			} else {
				c.entries[kind][id] = ev.Kv.Value
			}
		}
		c.rev = max(c.rev, ev.Kv.ModRevision)
	}
	if c.rev != base {
		c.moved()
	}
}

// sorted returns a kind's entries ordered by ID.
func (c *cache) sorted(kind string) []store.Write {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]store.Write, 0, len(c.entries[kind]))
	for id, v := range c.entries[kind] {
		out = append(out, store.Write{Kind: kind, ID: id, Value: v})
	}
	slices.SortFunc(out, func(x, y store.Write) int { return strings.Compare(x.ID, y.ID) })
	return out
}

// parseKey splits PREFIX KIND/ID; other keys under the prefix (the
// election's, the schema's) are not entries.
func parseKey(prefix, key string) (kind, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return "", "", false
	}
	kind, id, ok = strings.Cut(rest, "/")
	return kind, id, ok && id != "" && slices.Contains(store.Kinds, kind)
}

// reload reads the whole registry at one revision, page by page, and
// installs it in the cache.
func (s *Store) reload(ctx context.Context) error {
	entries := emptyEntries()
	var rev int64
	for _, kind := range store.Kinds {
		p := s.cfg.Prefix + kind + "/"
		key, end := p, clientv3.GetPrefixRangeEnd(p)
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			var resp *clientv3.GetResponse
			err := s.retry(ctx, func(ctx context.Context) (err error) {
				resp, err = s.cli.Get(ctx, key, opts...)
				return err
			})
			if err != nil {
				return s.wrap(ctx, "reading the registry", err)
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			for _, kv := range resp.Kvs {
				entries[kind][strings.TrimPrefix(string(kv.Key), p)] = kv.Value
			}
			if !resp.More || len(resp.Kvs) == 0 {
				break
			}
			key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
	s.cache.replace(rev, entries)
	return nil
}

// follow keeps the cache current from a watch of the prefix until ctx
// ends, watching again (after a reload when etcd compacted past the
// cache's revision) when the watch fails.
func (s *Store) follow(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := s.cli.Watch(wctx, s.cfg.Prefix, clientv3.WithPrefix(), clientv3.WithRev(s.cache.revision()+1))
		got, err := s.drain(wch)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if got {
			backoff = 100 * time.Millisecond
		}
		if errors.Is(err, rpctypes.ErrCompacted) {
			err = s.reload(ctx)
		}
		s.log.Debug("following the registry in etcd: watching again", "endpoints", s.endpoints(), "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// drain applies a watch's responses until it fails; got says whether any
// event came.
func (s *Store) drain(wch clientv3.WatchChan) (got bool, err error) {
	for wr := range wch {
		if err := wr.Err(); err != nil {
			return got, err
		}
		got = got || len(wr.Events) > 0
		s.cache.applyEvents(s.cfg.Prefix, wr.Events)
	}
	return got, errors.New("the watch ended")
}

// sync returns once the cache holds every write committed before the
// call: it reads the mod revision of writtenKey (linearizable), which
// every registry transaction writes, and waits until the watch has
// brought the cache that far; if the watch is slow (or broken) it reads
// the registry whole.
func (s *Store) sync(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var resp *clientv3.GetResponse
	err := s.retry(ctx, func(ctx context.Context) (err error) {
		resp, err = s.cli.Get(ctx, s.cfg.Prefix+writtenKey)
		return err
	})
	if err != nil {
		return s.wrap(ctx, "reading the registry", err)
	}
	var last int64
	if len(resp.Kvs) == 1 {
		last = resp.Kvs[0].ModRevision
	}
	wait := time.NewTimer(time.Second)
	defer wait.Stop()
	for {
		rev, changed := s.cache.state()
		if rev >= last {
			return nil
		}
		select {
		case <-changed:
		case <-wait.C:
			return s.reload(ctx)
		case <-ctx.Done():
			return s.wrap(ctx, "reading the registry: waiting for etcd's watch", ctx.Err())
		}
	}
}

func list[T any](ctx context.Context, s *Store, kind string) ([]T, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	var out []T
	for _, w := range s.cache.sorted(kind) {
		v, err := store.Decode[T](kind, w.ID, w.Value)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

func (s *Store) Agents(ctx context.Context) ([]store.Agent, error) {
	return list[store.Agent](ctx, s, store.KindAgents)
}

func (s *Store) Tasks(ctx context.Context) ([]store.Task, error) {
	return list[store.Task](ctx, s, store.KindTasks)
}

func (s *Store) Frameworks(ctx context.Context) ([]store.Framework, error) {
	return list[store.Framework](ctx, s, store.KindFrameworks)
}

func (s *Store) Weights(ctx context.Context) (map[string]float64, error) {
	if err := s.sync(ctx); err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, w := range s.cache.sorted(store.KindWeights) {
		v, err := store.DecodeWeight(w.ID, w.Value)
		if err != nil {
			return nil, err
		}
		out[w.ID] = v
	}
	return out, nil
}

// Package etcdstore keeps the master's registry in etcd, for replicated
// masters: one key per entry under a prefix (PREFIX agents/ID, tasks/ID,
// frameworks/ID, weights/ROLE), with the JSON values the bbolt store
// writes, so moving a registry between them is a plain copy.
//
// Writes: Apply is one etcd transaction. etcd refuses a transaction of more
// than --max-txn-ops operations (128 by default) or a request of more than
// --max-request-bytes (1.5 MiB); a batch larger than that is split into
// consecutive transactions, each fenced, in order. A batch that fits is
// atomic; one that does not may be cut by a crash between two of its
// transactions. The master's persister always writes each entry's latest
// value, so such a cut leaves every entry at a value the master held: the
// registry is never older than it was, only some of one group commit's
// changes may be missing (they were not acknowledged).
//
// Fencing: Fenced(key, rev) is a view whose every transaction is
// conditioned on the election key still having its creation revision, so a
// master that lost its election (paused, partitioned) writes nothing.
//
// Reads come from a cache the Store loads at Open and keeps current from an
// etcd watch, so a standby has the registry loaded and follows changes, and
// a new leader reads it at once. Every transaction that writes entries also
// writes PREFIX written; before answering, a read gets that key's mod
// revision (one small linearizable read) and waits until the watch has
// brought the cache that far, or reloads. (A hand edit with etcdctl
// reaches the cache through the watch too, but a read does not wait for it.)
package etcdstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/master/store"
)

// attemptMin is the least time one try of a request gets.
const attemptMin = 500 * time.Millisecond

// Defaults of Config.
const (
	DefaultPrefix          = "/gearbox/"
	DefaultDialTimeout     = 5 * time.Second
	DefaultRequestTimeout  = 5 * time.Second
	DefaultMaxTxnOps       = 128                 // etcd's --max-txn-ops default
	DefaultMaxRequestBytes = 3 * 1024 * 1024 / 2 // etcd's --max-request-bytes default
)

// schemaKey (under the prefix) holds the registry's schema version, as the
// bbolt store's meta bucket does. writtenKey is written by every
// transaction that writes entries: its mod revision is the registry's
// last change, so a read knows in one small request whether the cache
// holds it.
const (
	schemaKey     = "schema_version"
	schemaVersion = "1"
	writtenKey    = "written"
)

// Config says which etcd to use and how.
type Config struct {
	// Endpoints are etcd's client URLs (http://host:2379 or https://…).
	Endpoints []string
	// CA, Cert, Key: PEM files for TLS to etcd; CA alone trusts etcd's
	// server certificate, Cert and Key add a client certificate.
	CA, Cert, Key string
	// Prefix of every key (default /gearbox/); a "/" is added if missing.
	Prefix string
	// DialTimeout bounds Open's first contact with etcd (default 5 s).
	DialTimeout time.Duration
	// RequestTimeout bounds a call whose context has no deadline (default 5 s).
	RequestTimeout time.Duration
	// MaxTxnOps and MaxRequestBytes are etcd's --max-txn-ops and
	// --max-request-bytes (defaults 128 and 1.5 MiB): Apply splits a batch
	// to fit them.
	MaxTxnOps       int
	MaxRequestBytes int
	// Logger (default: discard).
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if !strings.HasSuffix(c.Prefix, "/") {
		c.Prefix += "/"
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.MaxTxnOps <= 0 {
		c.MaxTxnOps = DefaultMaxTxnOps
	}
	c.MaxTxnOps = max(c.MaxTxnOps, 2) // an entry and writtenKey
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

func (c Config) tls() (*tls.Config, error) {
	if c.CA == "" && c.Cert == "" && c.Key == "" {
		return nil, nil
	}
	if (c.Cert == "") != (c.Key == "") {
		return nil, errors.New("etcd TLS: give both a client certificate and its key, or neither")
	}
	cfg, err := transport.TLSInfo{CertFile: c.Cert, KeyFile: c.Key, TrustedCAFile: c.CA}.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd TLS (ca %q, cert %q, key %q): %w", c.CA, c.Cert, c.Key, err)
	}
	return cfg, nil
}

// Store is a store.Store in etcd. One per master process: it holds the
// client (Client) that the master's election uses too.
type Store struct {
	cfg   Config
	cli   *clientv3.Client
	log   *slog.Logger
	cache cache

	stop context.CancelFunc
	wg   sync.WaitGroup
}

var _ store.Store = (*Store)(nil)

// Open connects to etcd, loads the registry under the prefix and starts
// following it until Close (ctx bounds Open only). It fails, wrapping
// store.ErrUnavailable, when etcd cannot be reached within ctx or
// DialTimeout.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("etcd endpoints: give at least one (--etcd-endpoints http://host:2379,…)")
	}
	tlsCfg, err := cfg.tls()
	if err != nil {
		return nil, err
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: cfg.Endpoints, DialTimeout: cfg.DialTimeout, TLS: tlsCfg, Logger: zap.NewNop(),
		// A member that stops answering is noticed, and left, in seconds.
		DialKeepAliveTime: 2 * time.Second, DialKeepAliveTimeout: 2 * time.Second,
		MaxCallSendMsgSize: cfg.MaxRequestBytes + 512*1024,
	})
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	s := &Store{cfg: cfg, cli: cli, log: cfg.Logger}
	s.cache.init()
	octx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if err := s.checkSchema(octx); err != nil {
		cli.Close()
		if errors.Is(err, store.ErrUnavailable) {
			// etcd's client waits for a connection, so a refused TLS
			// handshake looks like silence: say what to check.
			err = fmt.Errorf("%w (is etcd running there? with TLS: are the etcd CA, client certificate and key right?)", err)
		}
		return nil, err
	}
	if err := s.reload(octx); err != nil {
		cli.Close()
		return nil, err
	}
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.follow(fctx) }()
	return s, nil
}

// checkSchema refuses a registry of a newer schema and marks a new one.
func (s *Store) checkSchema(ctx context.Context) error {
	k := s.cfg.Prefix + schemaKey
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, schemaVersion)).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return s.wrap(ctx, "opening the registry", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 1 && string(kvs[0].Value) != schemaVersion {
		return fmt.Errorf("the registry in etcd at %s (key %s) has schema version %q; this gearbox reads version %s (use the gearbox that wrote it)",
			s.endpoints(), k, kvs[0].Value, schemaVersion)
	}
	return nil
}

// Client is the etcd client; the master's election uses it too. The Store
// closes it.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix is the prefix of every key, ending in "/".
func (s *Store) Prefix() string { return s.cfg.Prefix }

// Close stops following and closes the client.
func (s *Store) Close() error {
	s.stop()
	s.wg.Wait()
	return s.cli.Close()
}

// Fenced returns a view of the store whose every Apply is one etcd
// transaction per chunk conditioned on CreateRevision(key) == rev (key is
// the whole etcd key, as concurrency.Election.Key() returns it). When the
// condition fails, Apply writes nothing and returns an error wrapping
// store.ErrFenced. Reads are the store's; Close does not close the store.
func (s *Store) Fenced(key string, rev int64) store.Store {
	return &fenced{s: s, key: key, rev: rev}
}

type fenced struct {
	s   *Store
	key string
	rev int64
}

func (f *fenced) Agents(ctx context.Context) ([]store.Agent, error) { return f.s.Agents(ctx) }
func (f *fenced) Tasks(ctx context.Context) ([]store.Task, error)   { return f.s.Tasks(ctx) }
func (f *fenced) Frameworks(ctx context.Context) ([]store.Framework, error) {
	return f.s.Frameworks(ctx)
}
func (f *fenced) Weights(ctx context.Context) (map[string]float64, error) { return f.s.Weights(ctx) }
func (f *fenced) Apply(ctx context.Context, b store.Batch) error {
	return f.s.apply(ctx, b, f)
}
func (f *fenced) Close() error { return nil }

// Apply writes the batch (see the package's doc on batches too large for
// one transaction).
func (s *Store) Apply(ctx context.Context, b store.Batch) error { return s.apply(ctx, b, nil) }

func (s *Store) apply(ctx context.Context, b store.Batch, fence *fenced) error {
	writes, err := b.Encode()
	if err != nil {
		return err
	}
	chunks, err := s.chunks(writes)
	if err != nil {
		return err
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var cmps []clientv3.Cmp
	if fence != nil {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(fence.key), "=", fence.rev))
	}
	for i, ops := range chunks {
		var resp *clientv3.TxnResponse
		err := s.retry(ctx, func(ctx context.Context) (err error) {
			resp, err = s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
			return err
		})
		if err != nil {
			return s.wrap(ctx, fmt.Sprintf("writing the registry (transaction %d of %d)", i+1, len(chunks)), err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("writing the registry: election key %s is no longer the one created at revision %d (another master leads): %w",
				fence.key, fence.rev, store.ErrFenced)
		}
	}
	return nil
}

// chunks turns writes into transactions' operations, each within etcd's
// limits of operations and bytes, each ending with the put of writtenKey.
func (s *Store) chunks(writes []store.Write) ([][]clientv3.Op, error) {
	// Room for the request's header, the fence's compare and writtenKey.
	budget := s.cfg.MaxRequestBytes - 4096
	written := s.written()
	var out [][]clientv3.Op
	var cur []clientv3.Op
	size := 0
	for _, w := range writes {
		k := s.key(w.Kind, w.ID)
		n := len(k) + len(w.Value) + 16
		if n > budget {
			return nil, fmt.Errorf("registry entry %s %q is %d bytes; etcd takes at most %d in one request (its --max-request-bytes; tell gearbox with the same setting)",
				w.Kind, w.ID, n, s.cfg.MaxRequestBytes)
		}
		if len(cur) == s.cfg.MaxTxnOps-1 || size+n > budget {
			out, cur, size = append(out, append(cur, written)), nil, 0
		}
		if w.Value == nil {
			cur = append(cur, clientv3.OpDelete(k))
		} else {
			cur = append(cur, clientv3.OpPut(k, string(w.Value)))
		}
		size += n
	}
	if len(cur) > 0 {
		out = append(out, append(cur, written))
	}
	return out, nil
}

// written is the put that marks a transaction as a change of the registry.
func (s *Store) written() clientv3.Op { return clientv3.OpPut(s.cfg.Prefix+writtenKey, "") }

func (s *Store) key(kind, id string) string { return s.cfg.Prefix + kind + "/" + id }

// retry calls f until it succeeds, fails for a reason other than etcd
// being unreachable, or ctx ends: a member that dies, or an etcd leader
// election, fails the requests then in flight, and another member (or the
// new leader) takes them a moment later. Writing a transaction again is
// safe: it puts the same values under the same fence.
//
// Each try gets half the time left (at least attemptMin), so a request
// lost with a dead etcd leader is given up and sent again to the next.
func (s *Store) retry(ctx context.Context, f func(context.Context) error) error {
	backoff := 50 * time.Millisecond
	for {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if dl, ok := ctx.Deadline(); ok {
			actx, cancel = context.WithTimeout(ctx, max(time.Until(dl)/2, attemptMin))
		}
		err := f(actx)
		cancel()
		if err == nil || !(unreachable(err) || actx.Err() != nil) || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, time.Second)
	}
}

// bound gives ctx the store's request timeout when it has no deadline.
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.RequestTimeout)
}

func (s *Store) endpoints() string { return strings.Join(s.cfg.Endpoints, ",") }

// wrap says what failed, and wraps store.ErrUnavailable when etcd could
// not be reached or had no quorum in time.
func (s *Store) wrap(ctx context.Context, op string, err error) error {
	// An error once the call's time is up is etcd not answering in time,
	// whatever form it took (the server's own deadline comes back as
	// codes.Unknown).
	if unreachable(err) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%s: etcd at %s cannot be reached or has no quorum (%w): %w", op, s.endpoints(), store.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: etcd at %s: %w", op, s.endpoints(), err)
}

func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	var ce interface{ Code() codes.Code }
	if errors.As(err, &ce) {
		code = ce.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

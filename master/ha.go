package master

// Replicated masters (HA on etcd). Every master process runs this loop:
//
//	      ┌──────────────────────────────────────────────┐
//	      ▼                                              │
//	  standby ──elected──▶ leader (a term: a fresh Master) ──step down──┘
//	  (serves GetMasters,   fenced on its election key; steps down when a
//	   GetHealth; refuses   write is fenced or its key is gone)
//	   the rest NOT_LEADER)
//
// The election is etcd's concurrency package: a session (a lease of
// --election-ttl) and an Election on prefix+"leader"; its value names the
// master. Each master also keeps prefix+"masters/"+id under its lease, for
// GetMasters. A term's registry writes go through the store's fenced view:
// a transaction conditioned on the election key's create revision, so a
// deposed leader cannot write. Losing etcd's quorum does not by itself end a
// term: the leader serves reads from memory and refuses changes (Unavailable)
// until etcd answers again, and steps down only once it learns another
// leads. Each term has a number (prefix+"term", incremented, fenced, when
// elected) and numbers its events from term<<32, so that numbers continue
// across leaders and a subscriber of an earlier term is told to take a new
// snapshot.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/promserve"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// haStore is what replicated masters need of their registry: a store
// (etcdstore.Store) whose etcd client the election shares and whose fenced
// views a leader writes through.
type haStore interface {
	store.Store
	Client() *clientv3.Client
	Fenced(key string, rev int64) store.Store
}

// validateHA checks the etcd keys, naming the flag.
func (c Config) validateHA() error {
	for _, ep := range c.EtcdEndpoints {
		u, err := url.Parse(strings.TrimSpace(ep))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--etcd-endpoints %q: give etcd's client URLs, e.g. https://10.0.0.1:2379", ep)
		}
	}
	switch {
	case (c.EtcdCert == "") != (c.EtcdKey == ""):
		return errors.New("--etcd-cert and --etcd-key go together: give both (TLS client authentication to etcd) or neither")
	case len(c.EtcdEndpoints) == 0 && (c.EtcdCA != "" || c.EtcdCert != ""):
		return errors.New("--etcd-ca, --etcd-cert and --etcd-key are for etcd: give --etcd-endpoints too")
	case c.ElectionTTL < 2*time.Second:
		return fmt.Errorf("--election-ttl %s: give at least 2s (a leader's lease must outlive a few heartbeats)", c.ElectionTTL)
	case c.ElectionTTL%time.Second != 0:
		return fmt.Errorf("--election-ttl %s: give whole seconds (etcd's leases count seconds)", c.ElectionTTL)
	case !strings.HasPrefix(c.EtcdPrefix, "/") || !strings.HasSuffix(c.EtcdPrefix, "/"):
		return fmt.Errorf("--etcd-prefix %q: give a key prefix that starts and ends with /, e.g. /gearbox/", c.EtcdPrefix)
	}
	if c.Advertise != "" {
		if _, _, err := net.SplitHostPort(c.Advertise); err != nil {
			return fmt.Errorf("--advertise %q: give host:port (the address agents and clients reach this master at)", c.Advertise)
		}
	}
	if len(c.EtcdEndpoints) > 0 && c.Advertise == "" {
		if host, _, err := net.SplitHostPort(c.Listen); err == nil {
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				return fmt.Errorf("--listen %s names no address other masters can send clients to: give --advertise host:port", c.Listen)
			}
		}
	}
	return nil
}

// masterValue is what a master writes as its election value and at
// masters/<id>.
type masterValue struct {
	ID        string    `json:"id"`
	Address   string    `json:"address"`
	Version   string    `json:"version"`
	Term      uint64    `json:"term,omitempty"`
	ElectedAt time.Time `json:"elected_at,omitzero"`
}

// ha is one master process's part in the election.
type ha struct {
	m      *Master // the process's: its config, log, address
	log    *slog.Logger
	st     haStore
	cli    *clientv3.Client
	prefix string
	self   masterValue
	listen string // resolved listen address
	eps    string

	etcdUp     atomic.Bool
	warned     atomic.Bool // of what the listeners' config leaves open
	leading    atomic.Bool
	term       atomic.Uint64 // this master's term while it leads, else the leader's as last seen
	leaderAddr atomic.Value  // string
	etcdState  atomic.Value  // string

	mu      sync.Mutex
	sess    *concurrency.Session
	cur     *Master // the term's master while leading
	curKey  string
	curRev  int64
	endTerm context.CancelCauseFunc
}

func newHA(m *Master, st haStore, listen string) *ha {
	adv := m.cfg.Advertise
	if adv == "" {
		adv = listen
	}
	h := &ha{m: m, log: m.log, st: st, cli: st.Client(), prefix: m.cfg.EtcdPrefix, listen: listen,
		eps:  strings.Join(m.cfg.EtcdEndpoints, ","),
		self: masterValue{ID: ids.New(), Address: adv, Version: versionString()}}
	h.leaderAddr.Store("")
	h.etcdState.Store("connecting")
	h.etcdUp.Store(true)
	return h
}

// runHA is Run for replicated masters.
func (m *Master) runHA(ctx context.Context) error {
	st, err := openHAStore(ctx, m.cfg, m.log)
	if err != nil {
		return err
	}
	defer st.Close()
	lis, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", m.cfg.Listen, err)
	}
	h := newHA(m, st, lis.Addr().String())
	m.ha = h
	m.addr.Store(h.listen)
	stopMetrics, err := promserve.ServeWithPprof(m.cfg.MetricsListen, m.cfg.MetricsPprof, m.log, h.collectors()...)
	if err != nil {
		lis.Close()
		return err
	}
	defer stopMetrics()
	bg, stopBg := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); h.watch(bg) }()
	defer func() { stopBg(); wg.Wait() }()
	defer h.closeSession()
	m.log.Info("master standing by for election", "id", h.self.ID, "address", h.self.Address, "etcd", h.eps, "election_ttl", m.cfg.ElectionTTL.String())
	return h.loop(ctx, lis)
}

// loop stands by, leads when elected, and stands by again, until ctx ends.
func (h *ha) loop(ctx context.Context, lis net.Listener) error {
	for first := true; ; first = false {
		if lis == nil {
			var err error
			if lis, err = net.Listen("tcp", h.listen); err != nil {
				return fmt.Errorf("listening on %s: %w", h.listen, err)
			}
		}
		stopStandby, err := h.serveStandby(lis)
		lis = nil
		if err != nil {
			return err
		}
		if first {
			// Listed in GetMasters once ready, when etcd answers (else
			// the campaign keeps trying).
			if _, err := h.session(ctx); err != nil {
				h.log.Warn("registering with etcd; trying again", "err", err)
			}
			close(h.m.ready)
		}
		e, err := h.campaign(ctx)
		stopStandby()
		if err != nil { // ctx ended
			return nil
		}
		h.lead(ctx, e)
		if ctx.Err() != nil {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := e.Resign(rctx); err != nil {
				h.log.Warn("resigning leadership on stop; another master takes over once the lease ends", "err", err)
			}
			cancel()
			return nil
		}
	}
}

// session returns a live session, making a new one when there is none or
// its lease ended, and (re)writes masters/<id> under it.
func (h *ha) session(ctx context.Context) (*concurrency.Session, error) {
	h.mu.Lock()
	s := h.sess
	h.mu.Unlock()
	if s != nil {
		select {
		case <-s.Done():
		default:
			return s, nil
		}
	}
	// The lease is granted here, within a bound, rather than by
	// NewSession, which would wait for etcd as long as its context lives:
	// that context is the keep-alives', which outlive ctx until revoke.
	gctx, cancel := context.WithTimeout(ctx, h.m.cfg.ElectionTTL)
	defer cancel()
	ttl := int(h.m.cfg.ElectionTTL / time.Second)
	lease, err := h.cli.Grant(gctx, int64(ttl))
	var ns *concurrency.Session
	if err == nil {
		ns, err = concurrency.NewSession(h.cli, concurrency.WithTTL(ttl), concurrency.WithLease(lease.ID),
			concurrency.WithContext(context.WithoutCancel(ctx)))
	}
	if err == nil {
		if err = h.putSelf(gctx, ns.Lease()); err != nil {
			h.revoke(ns)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("starting an election session with etcd at %s: %w", h.eps, err)
	}
	h.mu.Lock()
	h.sess = ns
	h.mu.Unlock()
	return ns, nil
}

func (h *ha) putSelf(ctx context.Context, lease clientv3.LeaseID) error {
	b, _ := json.Marshal(h.self)
	_, err := h.cli.Put(ctx, h.prefix+"masters/"+h.self.ID, string(b), clientv3.WithLease(lease))
	return err
}

// revoke ends a session and its lease (its keys go at once).
func (h *ha) revoke(s *concurrency.Session) {
	s.Orphan()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	h.cli.Revoke(ctx, s.Lease())
}

func (h *ha) closeSession() {
	h.mu.Lock()
	s := h.sess
	h.sess = nil
	h.mu.Unlock()
	if s != nil {
		h.revoke(s)
	}
}

// campaign blocks until this master is elected (nil error) or ctx ends.
// A session whose lease ended (etcd was out of reach for longer than the
// TTL) is replaced and the campaign starts again.
func (h *ha) campaign(ctx context.Context) (*concurrency.Election, error) {
	b, _ := json.Marshal(h.self)
	for backoff := 200 * time.Millisecond; ; backoff = min(2*backoff, 2*time.Second) {
		s, err := h.session(ctx)
		if err == nil {
			cctx, cancel := context.WithCancel(ctx)
			stop := context.AfterFunc(s.Ctx(), cancel)
			var e *concurrency.Election
			e, err = h.campaignOnce(cctx, s, string(b))
			stop()
			cancel()
			if err == nil {
				return e, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		h.log.Warn("campaigning for leadership; trying again", "err", err, "etcd", h.eps)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
	}
}

// campaignOnce is concurrency.Election's Campaign, except that a campaign
// ended by ctx leaves its key to the session's lease rather than deleting
// it with no bound on time (which would hang a stop while etcd is out of
// reach): it puts this master's key under the lease and waits until every
// key created before it is gone.
func (h *ha) campaignOnce(ctx context.Context, s *concurrency.Session, val string) (*concurrency.Election, error) {
	pfx := h.prefix + "leader/"
	k := fmt.Sprintf("%s%x", pfx, s.Lease())
	resp, err := h.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, val, clientv3.WithLease(s.Lease()))).Else(clientv3.OpGet(k)).Commit()
	if err != nil {
		return nil, err
	}
	rev := resp.Header.Revision
	if !resp.Succeeded {
		rev = resp.Responses[0].GetResponseRange().Kvs[0].CreateRevision
	}
	for {
		prev, err := h.cli.Get(ctx, pfx, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...)
		if err != nil {
			return nil, err
		}
		if len(prev.Kvs) == 0 {
			return concurrency.ResumeElection(s, h.prefix+"leader", k, rev), nil
		}
		if err := h.waitDelete(ctx, string(prev.Kvs[0].Key), prev.Header.Revision); err != nil {
			return nil, err
		}
	}
}

func (h *ha) waitDelete(ctx context.Context, key string, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range h.cli.Watch(wctx, key, clientv3.WithRev(rev)) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type == clientv3.EventTypeDelete {
				return nil
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("lost the watch of the leader's key")
}

// errStepDown causes a term's end.
type errStepDown struct{ why string }

func (e errStepDown) Error() string { return e.why }

// lead runs one term: its number, a fresh Master on the fenced registry,
// until ctx ends or the term must end. A term that cannot start (etcd out
// of reach) is tried again after a pause, holding the election key.
func (h *ha) lead(ctx context.Context, e *concurrency.Election) {
	key, rev := e.Key(), e.Rev()
	term, err := h.nextTerm(ctx, key, rev)
	if err == nil {
		elected := h.self
		elected.Term, elected.ElectedAt = term, time.Now().UTC()
		b, _ := json.Marshal(elected)
		pctx, cancel := context.WithTimeout(ctx, h.m.cfg.ElectionTTL)
		err = e.Proclaim(pctx, string(b))
		cancel()
	}
	if err != nil {
		h.log.Warn("elected, but the term could not start; standing by", "err", err)
		h.pause(ctx)
		return
	}
	tm, err := h.newTerm(term, key, rev)
	if err != nil {
		h.log.Error("elected, but the term's master could not be made", "err", err)
		h.pause(ctx)
		return
	}
	tctx, end := context.WithCancelCause(ctx)
	h.mu.Lock()
	h.cur, h.curKey, h.curRev, h.endTerm = tm, key, rev, end
	h.mu.Unlock()
	h.term.Store(term)
	h.leaderAddr.Store(h.self.Address)
	h.leading.Store(true)
	h.log.Info("elected leader", "term", term, "id", h.self.ID, "address", h.self.Address)
	err = tm.serve(tctx)
	h.leading.Store(false)
	h.mu.Lock()
	h.cur, h.endTerm = nil, nil
	h.mu.Unlock()
	end(nil)
	switch why := context.Cause(tctx); {
	case ctx.Err() != nil:
		h.log.Info("leader stopping", "term", term)
	case err != nil:
		h.log.Error("the term ended in error; standing by", "term", term, "err", err)
		h.pause(ctx)
	default:
		h.log.Warn("stepped down: leader lost", "term", term, "why", why)
	}
}

func (h *ha) pause(ctx context.Context) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
}

// newTerm is a fresh Master for one term, its registry the store's view
// fenced on the election key.
func (h *ha) newTerm(term uint64, key string, rev int64) (*Master, error) {
	cfg := h.m.cfg
	cfg.Listen, cfg.MetricsListen = h.listen, ""
	tm, err := New(cfg, h.log.With("term", term))
	if err != nil {
		return nil, err
	}
	tm.ha, tm.startedAt = h, h.m.startedAt
	tm.ev = newEventLogAt(cfg.EventBuffer, term<<32)
	tm.st = &termStore{Store: h.st.Fenced(key, rev), h: h}
	return tm, nil
}

// nextTerm increments the term counter, fenced on the election key: the
// key's version is the term.
func (h *ha) nextTerm(ctx context.Context, key string, rev int64) (uint64, error) {
	tctx, cancel := context.WithTimeout(ctx, h.m.cfg.ElectionTTL)
	defer cancel()
	termKey := h.prefix + "term"
	resp, err := h.cli.Txn(tctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", rev)).
		Then(clientv3.OpPut(termKey, h.self.ID), clientv3.OpGet(termKey)).Commit()
	if err != nil {
		return 0, fmt.Errorf("counting the term in etcd at %s: %w", h.eps, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("counting the term: %w", store.ErrFenced)
	}
	kvs := resp.Responses[1].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return 0, fmt.Errorf("counting the term: %s vanished", termKey)
	}
	return uint64(kvs[0].Version), nil
}

// stepDown ends the term now (at most once per term).
func (h *ha) stepDown(why string) {
	h.mu.Lock()
	end := h.endTerm
	h.mu.Unlock()
	if end != nil {
		end(errStepDown{why})
	}
}

// watch follows etcd: whether it answers, who leads, and, while this
// master leads, whether its election key is still the leader's. It renews
// the session of a leader whose lease outlived an outage.
func (h *ha) watch(ctx context.Context) {
	every := min(max(h.m.cfg.ElectionTTL/4, 250*time.Millisecond), time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		h.check(ctx, every)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (h *ha) check(ctx context.Context, timeout time.Duration) {
	gctx, cancel := context.WithTimeout(ctx, max(timeout, time.Second))
	resp, err := h.cli.Get(gctx, h.prefix+"leader/", clientv3.WithPrefix())
	cancel()
	if ctx.Err() != nil {
		return
	}
	h.setEtcd(err)
	if err != nil {
		return
	}
	var first *masterValue
	var firstKey string
	var firstRev int64
	for _, kv := range resp.Kvs {
		if first == nil || kv.CreateRevision < firstRev {
			var v masterValue
			json.Unmarshal(kv.Value, &v)
			first, firstKey, firstRev = &v, string(kv.Key), kv.CreateRevision
		}
	}
	if first != nil {
		h.leaderAddr.Store(first.Address)
	} else {
		h.leaderAddr.Store("")
	}
	h.mu.Lock()
	leading, key, rev := h.cur != nil, h.curKey, h.curRev
	h.mu.Unlock()
	if !leading {
		if first != nil {
			h.term.Store(first.Term)
		}
		return
	}
	if first == nil || firstKey != key || firstRev != rev {
		h.stepDown("its election key is gone from etcd: another master leads or will")
		return
	}
	h.renew(ctx)
}

// renew gives a leader whose session ended (its keep-alives failed while
// etcd was out of reach) a new session on the same lease, which etcd kept.
func (h *ha) renew(ctx context.Context) {
	h.mu.Lock()
	s := h.sess
	h.mu.Unlock()
	if s == nil {
		return
	}
	select {
	case <-s.Done():
	default:
		return
	}
	ttl := int(h.m.cfg.ElectionTTL / time.Second)
	ns, err := concurrency.NewSession(h.cli, concurrency.WithTTL(ttl), concurrency.WithLease(s.Lease()),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		h.log.Warn("renewing the leader's lease", "err", err)
		return
	}
	h.mu.Lock()
	h.sess = ns
	h.mu.Unlock()
	h.log.Info("the leader's lease is kept alive again")
}

// setEtcd records whether etcd answered, logging changes.
func (h *ha) setEtcd(err error) {
	was := h.etcdUp.Load()
	if err == nil {
		h.etcdState.Store("up")
		h.etcdUp.Store(true)
		if !was {
			h.log.Info("etcd answers again: changes are accepted", "etcd", h.eps)
		}
		return
	}
	h.etcdState.Store(fmt.Sprintf("unreachable or without quorum: %v", err))
	h.etcdUp.Store(false)
	if was {
		h.log.Warn("etcd does not answer (no quorum or unreachable): changes are refused, reads go on", "etcd", h.eps, "err", err)
	}
}

// unwritable is the error of a change refused while etcd cannot take it.
func (h *ha) unwritable(cause error) error {
	if cause == nil {
		cause = errors.New(h.etcdState.Load().(string))
	}
	return fmt.Errorf("the registry (etcd at %s) cannot be written: no quorum or out of reach; changes are refused until etcd answers again: %w (%w)",
		h.eps, store.ErrUnavailable, cause)
}

// termStore is a term's registry: the fenced view, which refuses at once
// while etcd does not answer and ends the term when a write is fenced.
type termStore struct {
	store.Store
	h *ha
}

func (s *termStore) Apply(ctx context.Context, b store.Batch) error {
	if !s.h.etcdUp.Load() {
		return s.h.unwritable(nil)
	}
	actx, cancel := context.WithTimeout(ctx, s.h.m.cfg.ElectionTTL)
	defer cancel()
	err := s.Store.Apply(actx, b)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrFenced):
		s.h.stepDown("a registry write was fenced: another master leads")
		return err
	case errors.Is(err, store.ErrUnavailable) || actx.Err() != nil:
		return s.h.unwritable(err)
	}
	return err
}

// masters lists every master from etcd (GetMasters); read from the local
// etcd member, so that it answers while etcd has no quorum.
func (h *ha) masters(ctx context.Context) ([]*masterv1.MasterInfo, error) {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	ms, err := h.cli.Get(gctx, h.prefix+"masters/", clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("reading the masters from etcd at %s: %w", h.eps, err)
	}
	ls, err := h.cli.Get(gctx, h.prefix+"leader/", append(clientv3.WithFirstCreate(), clientv3.WithSerializable())...)
	if err != nil {
		return nil, fmt.Errorf("reading the leader from etcd at %s: %w", h.eps, err)
	}
	var leader masterValue
	if len(ls.Kvs) > 0 {
		json.Unmarshal(ls.Kvs[0].Value, &leader)
	}
	var out []*masterv1.MasterInfo
	for _, kv := range ms.Kvs {
		var v masterValue
		if json.Unmarshal(kv.Value, &v) != nil {
			continue
		}
		mi := &masterv1.MasterInfo{Address: v.Address, Version: v.Version, Id: v.ID}
		if v.ID == leader.ID {
			mi.Leader, mi.Term = true, leader.Term
			if !leader.ElectedAt.IsZero() {
				mi.ElectedAt = timestamppb.New(leader.ElectedAt)
			}
		}
		out = append(out, mi)
	}
	return out, nil
}

// health adds the election's state to a GetHealth answer.
func (h *ha) health(out *masterv1.GetHealthResponse) {
	out.Leader, out.Term = h.leading.Load(), h.term.Load()
	out.Etcd, _ = h.etcdState.Load().(string)
	out.LeaderAddress, _ = h.leaderAddr.Load().(string)
}

// collectors are the process's metrics: the election's, and the current
// term's (none while standing by).
func (h *ha) collectors() []prometheus.Collector {
	b := func(v *atomic.Bool) func() float64 {
		return func() float64 {
			if v.Load() {
				return 1
			}
			return 0
		}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gearbox_master_leader", Help: "1 while this master leads, else 0."}, b(&h.leading)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gearbox_master_term", Help: "The leader's term (elections counted in etcd)."},
			func() float64 { return float64(h.term.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gearbox_master_etcd_up", Help: "1 while etcd answers (has quorum and is reachable), else 0."}, b(&h.etcdUp)),
		termCollector{h},
	}
}

// termCollector collects the current term's metrics. It describes none
// (an unchecked collector), as terms come and go.
type termCollector struct{ h *ha }

func (termCollector) Describe(chan<- *prometheus.Desc) {}

func (c termCollector) Collect(ch chan<- prometheus.Metric) {
	c.h.mu.Lock()
	tm := c.h.cur
	c.h.mu.Unlock()
	if tm == nil {
		return
	}
	for _, col := range tm.collectors() {
		col.Collect(ch)
	}
}

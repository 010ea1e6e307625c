package master

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/etcdtest"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// These tests run replicated masters in this process on a real 3-member
// etcd cluster (internal/etcdtest), and speak their gRPC API over loopback.

const testTTL = 2 * time.Second

type haMaster struct {
	m    *Master
	op   masterv1.OperatorClient
	conn *grpc.ClientConn
	stop func()
}

func startEtcd(t *testing.T) *etcdtest.Cluster {
	t.Helper()
	c, err := etcdtest.Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

// startHA starts n masters sharing the cluster, and waits until they serve.
func startHA(t *testing.T, c *etcdtest.Cluster, n int) []*haMaster {
	t.Helper()
	var out []*haMaster
	for range n {
		cfg := DefaultConfig()
		cfg.Listen, cfg.WorkDir, cfg.Socket, cfg.Insecure = "127.0.0.1:0", t.TempDir(), "", true
		cfg.EtcdEndpoints, cfg.EtcdPrefix, cfg.ElectionTTL = c.Endpoints(), "/ha-test/", testTTL
		m := runMaster(t, cfg)
		hm := &haMaster{m: m, stop: func() { stopMaster(m) }}
		conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		hm.op, hm.conn = masterv1.NewOperatorClient(conn), conn
		out = append(out, hm)
	}
	return out
}

// leader waits until exactly one of ms leads (by its own word) and returns
// it, within d.
func leader(t *testing.T, ms []*haMaster, d time.Duration) *haMaster {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var leaders []*haMaster
		for _, hm := range ms {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			h, err := hm.op.GetHealth(ctx, &masterv1.GetHealthRequest{})
			cancel()
			if err == nil && h.Leader {
				leaders = append(leaders, hm)
			}
		}
		if len(leaders) == 1 {
			return leaders[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d leaders after %s, want 1", len(leaders), d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func others(ms []*haMaster, not *haMaster) []*haMaster {
	var out []*haMaster
	for _, hm := range ms {
		if hm != not {
			out = append(out, hm)
		}
	}
	return out
}

// wantNotLeader checks err is a standby's NOT_LEADER naming leader.
func wantNotLeader(t *testing.T, what string, err error, leader string) {
	t.Helper()
	hint, ok := typesv1.LeaderHint(err)
	if !ok || status.Code(err) != codes.Unavailable || hint != leader {
		t.Errorf("%s on a standby: %v (hint %q, NOT_LEADER %v), want Unavailable NOT_LEADER naming %s", what, err, hint, ok, leader)
	}
}

// One of three leads; the standbys answer GetMasters and GetHealth, and
// refuse the Operator, AgentGateway and Scheduler calls with NOT_LEADER
// naming the leader.
func TestHAOneLeadsStandbysRedirect(t *testing.T) {
	ms := startHA(t, startEtcd(t), 3)
	l := leader(t, ms, 15*time.Second)
	ctx := context.Background()
	for _, s := range others(ms, l) {
		h, err := s.op.GetHealth(ctx, &masterv1.GetHealthRequest{})
		if err != nil || h.Leader || h.Etcd != "up" || h.LeaderAddress != l.m.Addr() || h.Term == 0 {
			t.Errorf("standby's health: %v, %v; want a standby that sees etcd up and the leader %s with its term", h, err, l.m.Addr())
		}
		// Read from the standby's etcd member, which may lag a little.
		var resp *masterv1.GetMastersResponse
		waitFor(t, func() bool {
			var err error
			resp, err = s.op.GetMasters(ctx, &masterv1.GetMastersRequest{})
			return err == nil && len(resp.Masters) == 3
		})
		var leaders, total int
		for _, mi := range resp.Masters {
			total++
			if mi.Leader {
				leaders++
				if mi.Address != l.m.Addr() || mi.ElectedAt == nil || mi.Term == 0 {
					t.Errorf("GetMasters' leader %v, want %s with elected_at and term", mi, l.m.Addr())
				}
			}
		}
		if total != 3 || leaders != 1 {
			t.Errorf("GetMasters listed %d masters, %d leading; want 3 and 1: %v", total, leaders, resp.Masters)
		}
		_, err = s.op.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: "t1", Image: "busybox"})
		wantNotLeader(t, "LaunchTask", err, l.m.Addr())
		_, err = s.op.GetState(ctx, &masterv1.GetStateRequest{})
		wantNotLeader(t, "GetState", err, l.m.Addr())
		ag, err := masterv1.NewAgentGatewayClient(s.conn).Connect(ctx)
		if err == nil {
			_, err = ag.Recv()
		}
		wantNotLeader(t, "AgentGateway.Connect", err, l.m.Addr())
		sc, err := schedulerv1.NewSchedulerClient(s.conn).Connect(ctx)
		if err == nil {
			_, err = sc.Recv()
		}
		wantNotLeader(t, "Scheduler.Connect", err, l.m.Addr())
	}
	if _, err := l.op.GetState(ctx, &masterv1.GetStateRequest{}); err != nil {
		t.Errorf("GetState on the leader: %v", err)
	}
	for _, hm := range ms {
		want := map[bool]float64{true: 1, false: 0}[hm == l]
		if got := gauge(hm, "gearbox_master_leader"); got != want {
			t.Errorf("gearbox_master_leader of %s: %g, want %g", hm.m.Addr(), got, want)
		}
		if got := gauge(hm, "gearbox_master_etcd_up"); got != 1 {
			t.Errorf("gearbox_master_etcd_up of %s: %g, want 1", hm.m.Addr(), got)
		}
	}
}

// gauge is the value of one of a replicated master's election gauges.
func gauge(hm *haMaster, name string) float64 {
	for _, c := range hm.m.ha.collectors() {
		if g, ok := c.(prometheus.Metric); ok && strings.Contains(g.Desc().String(), `"`+name+`"`) {
			var out dto.Metric
			if g.Write(&out) != nil {
				return -1
			}
			return out.GetGauge().GetValue()
		}
	}
	return -1
}

// The leader stops: another leads within the TTL + 2 s, with the registry
// the first wrote; its events are numbered after every event of the first
// term, and resuming from the first term's number is OutOfRange.
func TestHAFailoverKeepsRegistryAndEventNumbers(t *testing.T) {
	ms := startHA(t, startEtcd(t), 3)
	l := leader(t, ms, 15*time.Second)
	ctx := context.Background()
	if _, err := l.op.UpdateWeights(ctx, &masterv1.UpdateWeightsRequest{Weights: []*masterv1.WeightInfo{{Role: "web", Weight: 3}}}); err != nil {
		t.Fatal(err)
	}
	st, err := l.op.GetState(ctx, &masterv1.GetStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	oldSeq := st.LastEventSeq
	stoppedAt := time.Now()
	l.stop()
	rest := others(ms, l)
	nl := leader(t, rest, testTTL+2*time.Second)
	t.Logf("a new leader after %s", time.Since(stoppedAt))
	w, err := nl.op.GetWeights(ctx, &masterv1.GetWeightsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !hasWeight(w, "web", 3) {
		t.Errorf("the new leader's weights %v, want web=3 as the old leader wrote", w.Weights)
	}
	st2, err := nl.op.GetState(ctx, &masterv1.GetStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st2.LastEventSeq <= oldSeq {
		t.Errorf("the new leader's event seq %d, want more than the old term's %d", st2.LastEventSeq, oldSeq)
	}
	sub, err := nl.op.Subscribe(ctx, &masterv1.SubscribeRequest{Since: oldSeq})
	if err == nil {
		_, err = sub.Recv()
	}
	if status.Code(err) != codes.OutOfRange || !strings.Contains(status.Convert(err).Message(), "new snapshot") {
		t.Errorf("Subscribe since %d of the old term: %v, want OutOfRange telling to take a new snapshot", oldSeq, err)
	}
}

func hasWeight(w *masterv1.GetWeightsResponse, role string, want float64) bool {
	for _, rw := range w.Weights {
		if rw.Role == role && rw.Weight == want {
			return true
		}
	}
	return false
}

// A leader whose election key is deleted behind its back steps down, and
// its writes do not land.
func TestHALeaderWithoutItsKeyStepsDownAndIsFenced(t *testing.T) {
	c := startEtcd(t)
	ms := startHA(t, c, 2)
	l := leader(t, ms, 15*time.Second)
	ctx := context.Background()
	h0 := health(t, l)
	oldTerm := h0.Term
	h := l.m.ha
	h.mu.Lock()
	tm, key := h.cur, h.curKey
	h.mu.Unlock()
	if tm == nil {
		t.Fatal("the leader has no term")
	}
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	// The deposed term's store, written at once (before or after it
	// noticed): refused, and nothing lands.
	err = tm.st.Apply(ctx, store.Batch{Weights: map[string]float64{"fenced": 2}})
	if !errors.Is(err, store.ErrFenced) {
		t.Errorf("a write of the deposed leader: %v, want ErrFenced", err)
	}
	resp, err := cli.Get(ctx, "/ha-test/weights/fenced")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Errorf("the deposed leader's write landed in etcd: %s", resp.Kvs[0].Value)
	}
	// A new term begins (either master may win the new election; the
	// deposed one campaigns again like any standby), and the deposed
	// term is over. How soon is make bench's (the failover benchmark).
	waitFor(t, func() bool {
		for _, m := range ms {
			if hr, err := m.op.GetHealth(ctx, &masterv1.GetHealthRequest{}); err == nil && hr.Leader && hr.Term > oldTerm {
				return true
			}
		}
		return false
	})
	h.mu.Lock()
	stillCur := h.cur == tm
	h.mu.Unlock()
	if stillCur {
		t.Error("the deposed term is still the master's current term")
	}
}

// Losing etcd's quorum: the leader keeps serving reads, refuses changes
// with Unavailable naming etcd, and takes them again once quorum returns,
// still the leader of the same term.
func TestHAQuorumLossRefusesChangesUntilItReturns(t *testing.T) {
	c := startEtcd(t)
	ms := startHA(t, c, 2)
	l := leader(t, ms, 15*time.Second)
	ctx := context.Background()
	h0 := health(t, l)
	for _, i := range []int{1, 2} {
		if err := c.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { // the leader sees etcd down
		h, err := l.op.GetHealth(ctx, &masterv1.GetHealthRequest{})
		return err == nil && h.Etcd != "up"
	})
	if got := gauge(l, "gearbox_master_etcd_up"); got != 0 {
		t.Errorf("gearbox_master_etcd_up without quorum: %g, want 0", got)
	}
	upd := &masterv1.UpdateWeightsRequest{Weights: []*masterv1.WeightInfo{{Role: "db", Weight: 2}}}
	_, err := l.op.UpdateWeights(ctx, upd)
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "etcd") {
		t.Errorf("UpdateWeights without quorum: %v, want Unavailable naming etcd", err)
	}
	if _, err := l.op.GetState(ctx, &masterv1.GetStateRequest{}); err != nil {
		t.Errorf("GetState without quorum: %v, want an answer from memory", err)
	}
	// The refused change left no trace, even in memory.
	if w, err := l.op.GetWeights(ctx, &masterv1.GetWeightsRequest{}); err != nil || hasWeight(w, "db", 2) {
		t.Errorf("weights after the refused change: %v, %v; want an answer without db=2", w, err)
	}
	// A standby stops while etcd cannot answer it (no hang).
	stopped := make(chan struct{})
	go func() { others(ms, l)[0].stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("a standby did not stop in 30s while etcd had no quorum")
	}
	for _, i := range []int{1, 2} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { // changes are accepted again
		_, err := l.op.UpdateWeights(ctx, upd)
		return err == nil
	})
	h1, err := l.op.GetHealth(ctx, &masterv1.GetHealthRequest{})
	if err != nil || !h1.Leader || h1.Term != h0.Term || h1.Etcd != "up" {
		t.Errorf("after quorum returned: %v, %v; want the same leader, term %d, etcd up", h1, err, h0.Term)
	}
}

func TestHAConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.EtcdEndpoints = []string{"10.0.0.1:2379"} }, "--etcd-endpoints"},
		{func(c *Config) { c.EtcdEndpoints = []string{"http://e:2379"}; c.EtcdCert = "c.pem" }, "--etcd-cert and --etcd-key"},
		{func(c *Config) { c.EtcdCA = "ca.pem" }, "give --etcd-endpoints"},
		{func(c *Config) { c.ElectionTTL = time.Second }, "--election-ttl"},
		{func(c *Config) { c.ElectionTTL = 2500 * time.Millisecond }, "whole seconds"},
		{func(c *Config) { c.EtcdPrefix = "gearbox" }, "--etcd-prefix"},
		{func(c *Config) {
			c.EtcdEndpoints, c.Listen, c.TLSCert, c.TLSKey, c.TLSClientCA = []string{"http://e:2379"}, "0.0.0.0:5050", "c", "k", "ca"
		}, "--advertise"},
		{func(c *Config) { c.Advertise = "nohostport" }, "--advertise"},
	} {
		cfg := DefaultConfig()
		tc.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want an error naming %s", fmt.Sprint(cfg.EtcdEndpoints, cfg.EtcdPrefix, cfg.Advertise), err, tc.want)
		}
	}
	cfg := DefaultConfig()
	cfg.EtcdEndpoints = []string{"http://127.0.0.1:2379", "https://e2:2379"}
	if err := cfg.Validate(); err != nil {
		t.Errorf("a valid HA config: %v", err)
	}
}

// Without etcd a master is its own leader: GetMasters lists it alone.
func TestSingleMasterListsItselfAsLeader(t *testing.T) {
	m, op, _ := startMaster(t, nil)
	ctx := context.Background()
	resp, err := op.GetMasters(ctx, &masterv1.GetMastersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Masters) != 1 || !resp.Masters[0].Leader || resp.Masters[0].Address != m.Addr() {
		t.Errorf("GetMasters of a single master: %v, want it alone, leading, at %s", resp.Masters, m.Addr())
	}
	h, err := op.GetHealth(ctx, &masterv1.GetHealthRequest{})
	if err != nil || !h.Leader || h.Term != 0 || h.Etcd != "" {
		t.Errorf("GetHealth of a single master: %v, %v; want leader, term 0, no etcd", h, err)
	}
}

// health is m's GetHealth answer.
func health(t *testing.T, m *haMaster) *masterv1.GetHealthResponse {
	t.Helper()
	h, err := m.op.GetHealth(context.Background(), &masterv1.GetHealthRequest{})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

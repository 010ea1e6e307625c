//go:build bench

package integration

import (
	"context"
	"sort"
	"syscall"
	"testing"
	"time"
)

// The replicated master's benchmarks (issue 18): three masters on a real
// 3-member etcd (ha_harness_test.go), the binaries as make build makes
// them. Knobs: GEARBOX_BENCH_FAILOVERS (10), GEARBOX_BENCH_AGENTS (10000),
// GEARBOX_BENCH_AGENT_CONNS (1000).

// TestBenchHAFailover: the leader SIGKILLed, again and again; each time,
// how long until another master leads and takes an operator's call. The
// baseline, in the same run: the leader stopped with SIGTERM (it resigns,
// so no lease has to run out), and the lease's TTL itself, which bounds a
// crash's failover from below.
func TestBenchHAFailover(t *testing.T) {
	c := startHA(t, haOptions{})
	n := envInt("GEARBOX_BENCH_FAILOVERS", 10)
	kill, killElected := failovers(t, c, n, syscall.SIGKILL)
	term, termElected := failovers(t, c, max(n/2, 3), syscall.SIGTERM)
	sorted := func(ds []time.Duration) []time.Duration {
		out := append([]time.Duration(nil), ds...)
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	k50, kmax := pct(kill, 50), sorted(kill)[len(kill)-1]
	s50, smax := pct(term, 50), sorted(term)[len(term)-1]
	report(t, "HA failover, 3 masters on a 3-member etcd, --election-ttl %s; until another master takes an operator's call on the test's client connections:\n"+
		"  leader SIGKILLed (n=%d): p50 %s, worst %s (target p50 <= 3s); elected (its elected_at) p50 %s, worst %s\n"+
		"  leader SIGTERMed, resigning (baseline, n=%d): p50 %s, worst %s; elected p50 %s\n"+
		"  ratio SIGKILL/SIGTERM p50 %.2f; SIGKILL p50 / TTL %.2f\n"+
		"  each SIGKILL: %v",
		haTTL, len(kill), k50.Round(time.Millisecond), kmax.Round(time.Millisecond),
		pct(killElected, 50).Round(time.Millisecond), sorted(killElected)[len(killElected)-1].Round(time.Millisecond),
		len(term), s50.Round(time.Millisecond), smax.Round(time.Millisecond), pct(termElected, 50).Round(time.Millisecond),
		ratio(k50, s50), ratio(k50, haTTL), roundAll(kill))
	if k50 > 3*time.Second {
		t.Errorf("failover p50 %s, target <= 3s", k50)
	}
}

// failovers stops the leader with sig n times and returns how long each
// took until another served as leader, and until it was elected (its
// elected_at); the stopped master is started again, as a standby, before
// the next round.
func failovers(t *testing.T, c *haCluster, n int, sig syscall.Signal) (serving, elected []time.Duration) {
	for range n {
		old := c.leader()
		start := time.Now()
		c.killMaster(old, sig)
		l, err := c.pollLeader(old, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		serving = append(serving, time.Since(start))
		ms, _ := c.mastersOf(l)
		for _, mi := range ms {
			if mi.Leader && mi.ElectedAt != nil {
				elected = append(elected, mi.ElectedAt.AsTime().Sub(start))
			}
		}
		c.restartMaster(old)
		c.leader() // all three agree again
	}
	if len(elected) != n {
		t.Fatalf("%d of %d new leaders gave their elected_at", len(elected), n)
	}
	return serving, elected
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(10 * time.Millisecond)
	}
	return out
}

// TestBenchHAReregister: 10,000 simulated agents registered with the
// leader; it is SIGKILLed; how long until every one has registered again,
// under its ID, with the new leader. The simulated agents dial the new
// leader as soon as the masters name it (a real agent finds it through a
// standby's NOT_LEADER answer, a round trip more). The baseline, in the
// same run: the first registration of all of them with the first leader.
func TestBenchHAReregister(t *testing.T) {
	raiseFDLimit(t)
	nAgents, nConns := envInt("GEARBOX_BENCH_AGENTS", 10000), envInt("GEARBOX_BENCH_AGENT_CONNS", 1000)
	// Heartbeats every 5 s, missed after 15 s: nobody is missed while
	// they register again.
	c := startHA(t, haOptions{args: []string{"--agent-ping-timeout", "5s", "--max-agent-ping-timeouts", "3"}})
	old := c.leader()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	agents := make([]*simAgent, nAgents)
	first, err := registerAll(ctx, dialMany(t, c.masters[old].listen, nConns), agents, func(int) string { return "" }, nil)
	if err != nil {
		t.Fatalf("registering with the first leader: %v", err)
	}
	hbCtx, stopHB := context.WithCancel(ctx)
	for _, a := range agents {
		go a.heartbeat(hbCtx, 5*time.Second)
	}
	waitAgentsActive(t, c.masters[old], nAgents)
	ids := make([]string, nAgents)
	for i, a := range agents {
		ids[i] = a.id
	}

	killed := time.Now()
	c.killMaster(old, syscall.SIGKILL)
	stopHB()
	leader, err := c.pollLeader(old, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	elected := time.Since(killed)
	again := make([]*simAgent, nAgents)
	took, err := registerAll(ctx, dialMany(t, c.masters[leader].listen, nConns), again, func(i int) string { return ids[i] }, nil)
	if err != nil {
		t.Fatalf("registering again with the new leader: %v", err)
	}
	for i, a := range again {
		if a.id != ids[i] {
			t.Fatalf("agent %d registered again as %q, was %q", i, a.id, ids[i])
		}
		go a.heartbeat(ctx, 5*time.Second)
	}
	waitAgentsActive(t, c.masters[leader], nAgents)
	all := time.Since(killed)
	report(t, "HA: %d simulated agents on %d connections, 3 masters on a 3-member etcd, --election-ttl %s:\n"+
		"  first registration with the first leader (baseline): %s\n"+
		"  after the leader's SIGKILL: a new leader in %s; all registered again with it in %s (%.0f/s); all active %s after the kill\n"+
		"  ratio registering again / first registration: %.2f",
		nAgents, nConns, haTTL, first.Round(time.Millisecond), elected.Round(time.Millisecond), took.Round(time.Millisecond),
		float64(nAgents)/took.Seconds(), all.Round(time.Millisecond), ratio(took, first))
}

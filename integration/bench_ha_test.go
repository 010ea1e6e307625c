//go:build bench

package integration

import (
	"context"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// The replicated master's benchmarks (issue 18): three masters on a real
// 3-member etcd (ha_harness_test.go), the binaries as make build makes
// them. Knobs: GEARBOX_BENCH_FAILOVERS (10), GEARBOX_BENCH_AGENTS (10000),
// GEARBOX_BENCH_AGENT_CONNS (1000).

// TestBenchHAFailover: the leader SIGKILLed, again and again; each time,
// how long until another master leads and takes an operator's call (from a
// client that dials anew; also on connections kept from before). The
// baseline, in the same run: the leader stopped with SIGTERM (it resigns,
// so no lease has to run out), and the lease's TTL itself, which bounds a
// crash's failover from below.
func TestBenchHAFailover(t *testing.T) {
	c := startHA(t, haOptions{})
	n := envInt("GEARBOX_BENCH_FAILOVERS", 10)
	lc, err := leaderconn.New(leaderconn.Config{Masters: strings.Split(c.addrs(), ","), DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	kill, killElected, killFresh, killLC := failovers(t, c, lc, n, syscall.SIGKILL)
	term, termElected, termFresh, termLC := failovers(t, c, lc, max(n/2, 3), syscall.SIGTERM)
	sorted := func(ds []time.Duration) []time.Duration {
		out := append([]time.Duration(nil), ds...)
		sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
		return out
	}
	k50, kmax := pct(killFresh, 50), sorted(killFresh)[len(killFresh)-1]
	s50, smax := pct(termFresh, 50), sorted(termFresh)[len(termFresh)-1]
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	report(t, "HA failover, 3 masters on a 3-member etcd, --election-ttl %s; until another master takes an operator's call from a client dialling anew:\n"+
		"  leader SIGKILLed (n=%d): p50 %s, worst %s (target p50 <= 3s); elected (its elected_at) p50 %s, worst %s;\n"+
		"    on client connections kept from before (gRPC's default reconnection back-off): p50 %s, worst %s\n"+
		"    through one leaderconn.Conn kept from before, given the three masters (as agents, frameworks and the CLI reach them): p50 %s, worst %s\n"+
		"  leader SIGTERMed, resigning (baseline, n=%d): p50 %s, worst %s; elected p50 %s; on kept connections p50 %s; through leaderconn p50 %s\n"+
		"  ratio SIGKILL/SIGTERM p50 %.2f; SIGKILL p50 / TTL %.2f\n"+
		"  each SIGKILL: %v",
		haTTL, len(kill), ms(k50), ms(kmax), ms(pct(killElected, 50)), ms(sorted(killElected)[len(killElected)-1]),
		ms(pct(kill, 50)), ms(sorted(kill)[len(kill)-1]), ms(pct(killLC, 50)), ms(sorted(killLC)[len(killLC)-1]),
		len(term), ms(s50), ms(smax), ms(pct(termElected, 50)), ms(pct(term, 50)), ms(pct(termLC, 50)),
		ratio(k50, s50), ratio(k50, haTTL), roundAll(killFresh))
	if k50 > 3*time.Second {
		t.Errorf("failover p50 %s, target <= 3s", k50)
	}
}

// failovers stops the leader with sig n times and returns how long each
// took until another served as leader on the harness's client connections
// (kept from before, so gRPC's reconnection back-off counts), until it was
// elected (its elected_at), and until it served a client dialling anew;
// the stopped master is started again, as a standby, before the next round.
func failovers(t *testing.T, c *haCluster, lc *leaderconn.Conn, n int, sig syscall.Signal) (serving, elected, fresh, viaLC []time.Duration) {
	for range n {
		old := c.leader()
		start := time.Now()
		c.killMaster(old, sig)
		freshc, lcc := make(chan time.Duration, 1), make(chan time.Duration, 1)
		go func() { freshc <- freshLeader(c, old, start) }()
		go func() { lcc <- leaderConnServes(lc, c.masters[old].listen, start) }()
		l, err := c.pollLeader(old, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		serving = append(serving, time.Since(start))
		fresh = append(fresh, <-freshc)
		viaLC = append(viaLC, <-lcc)
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
	return serving, elected, fresh, viaLC
}

// leaderConnServes is how long after start lc, kept from before, first
// has an operator's call taken by a master other than old (30 s at most):
// what an agent, a framework or the CLI given the three masters sees.
func leaderConnServes(lc *leaderconn.Conn, old string, start time.Time) time.Duration {
	for time.Since(start) < 30*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := masterv1.NewOperatorClient(lc).GetAgents(ctx, &masterv1.GetAgentsRequest{})
		cancel()
		if err == nil && lc.Leader() != old {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 30 * time.Second
}

// freshLeader is how long after start a client that dials anew for every
// try (so no reconnection back-off of gRPC's) first has an operator's call
// taken by a master other than old; 30 s at the most.
func freshLeader(c *haCluster, old int, start time.Time) time.Duration {
	for time.Since(start) < 30*time.Second {
		for i, m := range c.masters {
			if i == old {
				continue
			}
			cc, err := grpc.NewClient(m.listen, grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err = masterv1.NewOperatorClient(cc).GetAgents(ctx, &masterv1.GetAgentsRequest{})
			cancel()
			cc.Close()
			if err == nil {
				return time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 30 * time.Second
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

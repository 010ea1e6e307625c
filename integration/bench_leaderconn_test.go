//go:build bench

package integration

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/leaderconn/leaderconntest"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// benchStandby refuses every operator call as a standby naming leader.
type benchStandby struct {
	masterv1.UnimplementedOperatorServer
	leader string
}

func (s benchStandby) GetAgents(context.Context, *masterv1.GetAgentsRequest) (*masterv1.GetAgentsResponse, error) {
	return nil, typesv1.NotLeader(s.leader)
}

// What finding the leader costs a client, on the real master binary
// (plaintext TCP, --insecure) with a standby in this process listed
// first, against the baseline of the same run: a grpc.ClientConn dialed
// straight at the leader. Steady state: GetAgents calls in a row (the
// leader known). Cold: a new connection and one call, the baseline's to
// the leader, leaderconn's through the standby's NOT_LEADER hint. Knob:
// GEARBOX_BENCH_LC_CALLS (2000; a tenth of them cold).
func TestBenchLeaderConn(t *testing.T) {
	n := envInt("GEARBOX_BENCH_LC_CALLS", 2000)
	m := startMasterProc(t, "--insecure")
	standby, _ := leaderconntest.Serve(t, func(s *grpc.Server) { masterv1.RegisterOperatorServer(s, benchStandby{leader: m.listen}) })
	ctx := context.Background()
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	direct := func() (masterv1.OperatorClient, func()) {
		cc, err := grpc.NewClient(m.listen, dial...)
		if err != nil {
			t.Fatal(err)
		}
		return masterv1.NewOperatorClient(cc), func() { cc.Close() }
	}
	viaStandby := func() (masterv1.OperatorClient, func()) {
		lc, err := leaderconn.New(leaderconn.Config{Masters: []string{standby, m.listen}, DialOptions: dial})
		if err != nil {
			t.Fatal(err)
		}
		return masterv1.NewOperatorClient(lc), func() { lc.Close() }
	}
	calls := func(c masterv1.OperatorClient, k int) time.Duration {
		start := time.Now()
		for range k {
			if _, err := c.GetAgents(ctx, &masterv1.GetAgentsRequest{}); err != nil {
				t.Fatal(err)
			}
		}
		return time.Since(start) / time.Duration(k)
	}
	steady := func(open func() (masterv1.OperatorClient, func())) time.Duration {
		c, closeConn := open()
		defer closeConn()
		calls(c, 10) // connected, the leader known
		return calls(c, n)
	}
	cold := func(open func() (masterv1.OperatorClient, func())) time.Duration {
		var total time.Duration
		for range n / 10 {
			start := time.Now()
			c, closeConn := open()
			calls(c, 1)
			total += time.Since(start)
			closeConn()
		}
		return total / time.Duration(n/10)
	}
	baseSteady, lcSteady := steady(direct), steady(viaStandby)
	baseCold, lcCold := cold(direct), cold(viaStandby)
	t.Logf("steady GetAgents: direct %v/call, leaderconn %v/call: ratio %.2f", baseSteady, lcSteady, float64(lcSteady)/float64(baseSteady))
	t.Logf("cold connect + call: direct to the leader %v, leaderconn via a standby's hint %v: ratio %.2f", baseCold, lcCold, float64(lcCold)/float64(baseCold))
}

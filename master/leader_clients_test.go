package master

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/leaderconn/leaderconntest"
	"github.com/gearboxd/gearbox/master/schedclient"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// standbyMaster is a standby of a replicated master as clients see it: a
// gRPC server on loopback that refuses operators and frameworks with
// typesv1.NotLeader(leader).
type standbyMaster struct {
	masterv1.UnimplementedOperatorServer
	schedulerv1.UnimplementedSchedulerServer
	addr     string
	leader   string
	refusals atomic.Int32
}

func startStandby(t *testing.T, leader string) *standbyMaster {
	t.Helper()
	s := &standbyMaster{leader: leader}
	s.addr, _ = leaderconntest.Serve(t, func(srv *grpc.Server) {
		masterv1.RegisterOperatorServer(srv, s)
		schedulerv1.RegisterSchedulerServer(srv, s)
	})
	return s
}

func (s *standbyMaster) GetAgents(context.Context, *masterv1.GetAgentsRequest) (*masterv1.GetAgentsResponse, error) {
	s.refusals.Add(1)
	return nil, typesv1.NotLeader(s.leader)
}

func (s *standbyMaster) Connect(grpc.BidiStreamingServer[schedulerv1.Call, schedulerv1.Event]) error {
	s.refusals.Add(1)
	return typesv1.NotLeader(s.leader)
}

// Given a standby first and the real master (leading) last, an operator
// and a framework on schedclient both end up at the real master.
func TestClientsFindTheLeadingMaster(t *testing.T) {
	m, _, _ := startMaster(t, func(c *Config) { c.Insecure = true })
	s1 := startStandby(t, m.Addr())
	s2 := startStandby(t, "") // knows no leader: the next in the list is tried
	masters := []string{s2.addr, s1.addr, m.Addr()}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}

	lc, err := leaderconn.New(leaderconn.Config{Masters: masters, DialOptions: dial, MinBackoff: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := masterv1.NewOperatorClient(lc).GetAgents(ctx, &masterv1.GetAgentsRequest{}); err != nil {
		t.Fatalf("GetAgents through the standbys: %v", err)
	}
	if lc.Leader() != m.Addr() {
		t.Errorf("leader %q, want the real master %s", lc.Leader(), m.Addr())
	}

	subscribed := make(chan string, 1)
	fctx, fcancel := context.WithCancel(ctx)
	c := schedclient.New(schedclient.Config{Masters: masters, DialOptions: dial, MinBackoff: 10 * time.Millisecond,
		Info: &schedulerv1.FrameworkInfo{Name: "ha", Roles: []string{"*"}},
		OnSubscribed: func(id string) error {
			select {
			case subscribed <- id:
			default:
			}
			return nil
		}})
	done := make(chan error, 1)
	go func() {
		done <- c.Run(fctx, func(context.Context, *schedclient.Client, *schedulerv1.Event) error { return nil })
	}()
	defer func() { fcancel(); <-done }()
	select {
	case id := <-subscribed:
		fw, err := masterv1.NewOperatorClient(lc).GetFrameworks(ctx, &masterv1.GetFrameworksRequest{})
		if err != nil || len(fw.GetFrameworks()) != 1 || fw.GetFrameworks()[0].GetId() != id {
			t.Fatalf("the leading master's frameworks: %v, %v; want %s", fw, err, id)
		}
	case err := <-done:
		t.Fatalf("the framework gave up: %v", err)
	case <-ctx.Done():
		t.Fatal("the framework did not subscribe with the leading master")
	}
	if s1.refusals.Load() == 0 || s2.refusals.Load() == 0 {
		t.Errorf("standbys asked %d and %d times: the test did not go through them", s1.refusals.Load(), s2.refusals.Load())
	}
}

package leaderconn

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/leaderconn/leaderconntest"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeMaster is a real gRPC server on loopback that leads or stands by:
// a standby refuses every call with typesv1.NotLeader(hint).
type fakeMaster struct {
	masterv1.UnimplementedOperatorServer
	addr     string
	stop     func()
	standby  atomic.Bool
	hint     atomic.Value // string
	calls    atomic.Int32 // calls it took as the leader
	refusals atomic.Int32
	// launchErr, when set, is what LaunchTask answers as the leader.
	launchErr error
}

func startFake(t *testing.T) *fakeMaster {
	t.Helper()
	f := &fakeMaster{}
	f.hint.Store("")
	f.addr, f.stop = leaderconntest.Serve(t, func(s *grpc.Server) { masterv1.RegisterOperatorServer(s, f) })
	return f
}

// standBy makes f a standby naming leader ("" for none).
func (f *fakeMaster) standBy(leader string) {
	f.hint.Store(leader)
	f.standby.Store(true)
}

func (f *fakeMaster) refuse() error {
	if f.standby.Load() {
		f.refusals.Add(1)
		return typesv1.NotLeader(f.hint.Load().(string))
	}
	f.calls.Add(1)
	return nil
}

func (f *fakeMaster) GetAgents(context.Context, *masterv1.GetAgentsRequest) (*masterv1.GetAgentsResponse, error) {
	if err := f.refuse(); err != nil {
		return nil, err
	}
	return &masterv1.GetAgentsResponse{Agents: []*masterv1.AgentInfo{{Id: "from " + f.addr}}}, nil
}

func (f *fakeMaster) LaunchTask(context.Context, *masterv1.LaunchTaskRequest) (*masterv1.LaunchTaskResponse, error) {
	if err := f.refuse(); err != nil {
		return nil, err
	}
	return &masterv1.LaunchTaskResponse{Task: &masterv1.Task{Id: "t"}}, f.launchErr
}

func (f *fakeMaster) Subscribe(req *masterv1.SubscribeRequest, st grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
	if err := f.refuse(); err != nil {
		return err
	}
	return st.Send(&masterv1.SubscribeResponse{Events: []*masterv1.Event{{Seq: 1}}})
}

func newConn(t *testing.T, masters ...string) *Conn {
	t.Helper()
	c, err := New(Config{Masters: masters, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, DialTimeout: 2 * time.Second, LeaderWait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// deadAddr is a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

func agentsFrom(t *testing.T, c *Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := masterv1.NewOperatorClient(c).GetAgents(ctx, &masterv1.GetAgentsRequest{})
	if err != nil {
		t.Fatalf("GetAgents: %v", err)
	}
	return r.GetAgents()[0].GetId()
}

// A call to a standby goes on to the leader it names, and the next call
// goes straight there.
func TestFollowsTheLeaderAStandbyNames(t *testing.T) {
	s1, s2, leader := startFake(t), startFake(t), startFake(t)
	s1.standBy(leader.addr)
	s2.standBy(leader.addr)
	c := newConn(t, s1.addr, s2.addr, leader.addr)
	if got := agentsFrom(t, c); got != "from "+leader.addr {
		t.Fatalf("answered %q, want the leader's", got)
	}
	if s1.refusals.Load() != 1 || s2.refusals.Load() != 0 || leader.calls.Load() != 1 {
		t.Fatalf("refusals %d, %d; leader's calls %d: want 1, 0, 1", s1.refusals.Load(), s2.refusals.Load(), leader.calls.Load())
	}
	agentsFrom(t, c)
	if s1.refusals.Load() != 1 || leader.calls.Load() != 2 {
		t.Errorf("the second call went to the standby again (%d refusals) or not to the leader (%d calls)", s1.refusals.Load(), leader.calls.Load())
	}
	if c.Leader() != leader.addr {
		t.Errorf("Leader() = %q, want %q", c.Leader(), leader.addr)
	}
}

// A hint the list spells otherwise (tcp://host:port) reuses that entry.
func TestHintMatchesTheListsEntry(t *testing.T) {
	s, leader := startFake(t), startFake(t)
	s.standBy(leader.addr)
	c := newConn(t, s.addr, "tcp://"+leader.addr)
	agentsFrom(t, c)
	if c.Leader() != "tcp://"+leader.addr {
		t.Errorf("Leader() = %q, want the list's entry tcp://%s", c.Leader(), leader.addr)
	}
}

// A dead master and a standby that knows no leader are passed over, in
// the list's order.
func TestDeadMasterAndEmptyHintMoveOn(t *testing.T) {
	s, leader := startFake(t), startFake(t)
	s.standBy("")
	c := newConn(t, deadAddr(t), s.addr, leader.addr)
	if got := agentsFrom(t, c); got != "from "+leader.addr {
		t.Fatalf("answered %q, want the leader's", got)
	}
	if s.refusals.Load() != 1 {
		t.Errorf("the standby was asked %d times, want once", s.refusals.Load())
	}
}

// While an election is under way (every standby says no master leads),
// a call waits; it goes through once a leader is named.
func TestWaitsForAnElection(t *testing.T) {
	s1, s2 := startFake(t), startFake(t)
	s1.standBy("")
	s2.standBy("")
	c := newConn(t, s1.addr, s2.addr)
	time.AfterFunc(300*time.Millisecond, func() { s1.standBy(s2.addr); s2.standby.Store(false) })
	if got := agentsFrom(t, c); got != "from "+s2.addr {
		t.Fatalf("answered %q, want the new leader's", got)
	}
}

// A leader's own failure is the caller's: a LaunchTask that may have run
// is not sent again anywhere.
func TestLeadersErrorsAreNotRetried(t *testing.T) {
	s, leader := startFake(t), startFake(t)
	s.standBy(leader.addr)
	leader.launchErr = status.Error(codes.Unavailable, "the registry (etcd at x) cannot be written: no quorum")
	c := newConn(t, s.addr, leader.addr)
	_, err := masterv1.NewOperatorClient(c).LaunchTask(context.Background(), &masterv1.LaunchTaskRequest{TaskId: "t"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no quorum") {
		t.Fatalf("LaunchTask: %v, want the leader's Unavailable as it is", err)
	}
	if leader.calls.Load() != 1 || s.refusals.Load() != 1 {
		t.Errorf("leader called %d times, standby %d: want 1 and 1", leader.calls.Load(), s.refusals.Load())
	}
	if c.Leader() != leader.addr {
		t.Errorf("a leader that answered is still the leader; Leader() = %q", c.Leader())
	}
}

// No master answers: the call fails at once with ErrNoMaster (Unavailable
// to gRPC), naming the masters.
func TestNoMasterAnswers(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	c := newConn(t, a, b)
	_, err := masterv1.NewOperatorClient(c).GetAgents(context.Background(), &masterv1.GetAgentsRequest{})
	if !errors.Is(err, ErrNoMaster) || status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) {
		t.Fatalf("GetAgents with every master dead: %v", err)
	}
}

// Standbys that never name a leader: the call gives up after LeaderWait.
func TestNoLeaderGivesUp(t *testing.T) {
	s := startFake(t)
	s.standBy("")
	c, err := New(Config{Masters: []string{s.addr}, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
		MinBackoff: 10 * time.Millisecond, LeaderWait: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = masterv1.NewOperatorClient(c).GetAgents(context.Background(), &masterv1.GetAgentsRequest{})
	if !errors.Is(err, ErrNoMaster) || !strings.Contains(err.Error(), "no master leads") {
		t.Fatalf("GetAgents with no leader: %v", err)
	}
	if _, ok := typesv1.LeaderHint(err); ok {
		t.Errorf("the final error still reads as a standby's refusal: a caller would follow it again")
	}
}

// The leader goes away; a standby names the new one: the next call (and
// a stream) finds it.
func TestLeaderChange(t *testing.T) {
	s1, s2, s3 := startFake(t), startFake(t), startFake(t)
	s2.standBy(s1.addr)
	s3.standBy(s1.addr)
	c := newConn(t, s1.addr, s2.addr, s3.addr)
	agentsFrom(t, c)
	s1.stop()
	s2.standBy(s3.addr)
	s3.standby.Store(false)
	// A call on the old leader's connection as it breaks may have run
	// there: it fails, as it is, and teaches the Conn the leader is gone.
	_, err := masterv1.NewOperatorClient(c).GetAgents(context.Background(), &masterv1.GetAgentsRequest{})
	if err != nil && status.Code(err) != codes.Unavailable {
		t.Fatalf("first call after the leader went: %v, want success or Unavailable", err)
	}
	if got := agentsFrom(t, c); got != "from "+s3.addr {
		t.Fatalf("after the leader went: %q, want the new leader's", got)
	}
}

// A stream a standby refuses teaches the Conn the leader: the caller's
// next stream opens there.
func TestStreamLearnsTheLeader(t *testing.T) {
	s, leader := startFake(t), startFake(t)
	s.standBy(leader.addr)
	c := newConn(t, s.addr, leader.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	oc := masterv1.NewOperatorClient(c)
	st, err := oc.Subscribe(ctx, &masterv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err == nil {
		t.Fatal("a standby's stream delivered an event")
	} else if hint, ok := typesv1.LeaderHint(err); !ok || hint != leader.addr {
		t.Fatalf("standby's stream ended %v, want NOT_LEADER naming %s", err, leader.addr)
	}
	if c.Leader() != leader.addr {
		t.Fatalf("Leader() = %q after the refusal, want %q", c.Leader(), leader.addr)
	}
	st, err = oc.Subscribe(ctx, &masterv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := st.Recv(); err != nil || r.GetEvents()[0].GetSeq() != 1 {
		t.Fatalf("second stream: %v, %v", r, err)
	}
}

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		err  string
	}{
		{in: "a:5050,b:5050, c:5050", want: 3},
		{in: "unix:///run/gearbox-master.sock", want: 1},
		{in: "tcp://m1:5050,dns:///m2:5050,[::1]:5050", want: 3},
		{in: "", err: "no master address"},
		{in: "a:5050,,b:5050", err: `master address 2 of 3 ("")`},
		{in: "a:5050,b", err: `master address 2 of 2 ("b")`},
		{in: "a:x", err: `port "x"`},
		{in: ":5050", err: "no host"},
		{in: "unix://relative.sock", err: "absolute"},
	} {
		got, err := ParseList(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseList(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || len(got) != tc.want {
			t.Errorf("ParseList(%q) = %v, %v; want %d entries", tc.in, got, err, tc.want)
		}
	}
}

func FuzzParseList(f *testing.F) {
	f.Add("a:5050,b:5050")
	f.Add("unix:///x,tcp://[::1]:1")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseList(s)
		if err == nil && len(l) == 0 {
			t.Fatalf("ParseList(%q): no entry and no error", s)
		}
	})
}

// A leader the caller found silent (paused: its connection still looks
// alive) is forgotten: the next call looks for the leader anew.
func TestForgetASilentLeader(t *testing.T) {
	s, leader := startFake(t), startFake(t)
	s.standBy(leader.addr)
	c := newConn(t, s.addr, leader.addr)
	agentsFrom(t, c)
	c.Forget(leader.addr)
	if c.Leader() != "" {
		t.Fatalf("Leader() = %q after Forget", c.Leader())
	}
	s.standby.Store(false) // elected meanwhile
	leader.standBy(s.addr)
	if got := agentsFrom(t, c); got != "from "+s.addr {
		t.Fatalf("after Forget: %q, want the new leader's", got)
	}
	if leader.refusals.Load() != 0 {
		t.Errorf("the forgotten leader was asked first (%d refusals): the list goes on past it", leader.refusals.Load())
	}
}

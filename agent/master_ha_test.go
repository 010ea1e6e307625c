package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/leaderconn/leaderconntest"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// haMaster is one master of a replicated master, as its agents see it: a
// real gRPC server on loopback whose gateway registers agents while it
// leads and answers typesv1.NotLeader(leader) while it stands by.
type haMaster struct {
	masterv1.UnimplementedAgentGatewayServer
	addr    string
	stop    func()
	leader  atomic.Value // "": it leads; else the leader it names
	regs    chan *masterv1.Register
	updates chan *masterv1.StatusUpdate
}

func startHAMaster(t *testing.T, leader string) *haMaster {
	t.Helper()
	m := &haMaster{regs: make(chan *masterv1.Register, 10), updates: make(chan *masterv1.StatusUpdate, 10)}
	m.leader.Store(leader)
	m.addr, m.stop = leaderconntest.Serve(t, func(s *grpc.Server) { masterv1.RegisterAgentGatewayServer(s, m) })
	return m
}

func (m *haMaster) Connect(st grpc.BidiStreamingServer[masterv1.AgentMessage, masterv1.MasterMessage]) error {
	first, err := st.Recv()
	if err != nil {
		return err
	}
	if l := m.leader.Load().(string); l != "" {
		return typesv1.NotLeader(l)
	}
	m.regs <- first.GetRegister()
	if err := st.Send(&masterv1.MasterMessage{Msg: &masterv1.MasterMessage_Registered{Registered: &masterv1.Registered{AgentId: "agent-1"}}}); err != nil {
		return err
	}
	for {
		msg, err := st.Recv()
		if err != nil {
			return err
		}
		if u := msg.GetUpdate(); u != nil {
			m.updates <- u
		}
	}
}

func (m *haMaster) registration(t *testing.T) *masterv1.Register {
	t.Helper()
	select {
	case r := <-m.regs:
		return r
	case <-time.After(20 * time.Second):
		t.Fatalf("the agent did not register with %s", m.addr)
		return nil
	}
}

// An agent given three masters registers with the one that leads, though
// the list names a standby first; when the leader goes it registers again,
// under its ID, with the new one, and resends the updates not acknowledged.
func TestAgentFollowsTheLeader(t *testing.T) {
	standby := startHAMaster(t, "")
	leader := startHAMaster(t, "")
	other := startHAMaster(t, leader.addr)
	standby.leader.Store(leader.addr)

	fake := newFake()
	mc := newTestMasterClient(t, t.TempDir(), fake, ResourceSet{CPUs: 1, Memory: 1 << 30})
	mc.addr = standby.addr + "," + leader.addr + "," + other.addr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); mc.run(ctx) }()
	defer func() { cancel(); <-done }()

	if r := leader.registration(t); r.GetAgentId() != "" {
		t.Fatalf("first registration with agent ID %q", r.GetAgentId())
	}
	mc.mu.Lock()
	mc.queueLocked(&pendingUpdate{TaskID: "t1", State: containerizer.TaskRunning})
	mc.mu.Unlock()
	if u := <-leader.updates; u.GetStatus().GetTaskId() != "t1" {
		t.Fatalf("update %v", u)
	}

	// The leader goes; the others elect "other" (the standby names it).
	leader.stop()
	standby.leader.Store(other.addr)
	other.leader.Store("")
	if r := other.registration(t); r.GetAgentId() != "agent-1" {
		t.Fatalf("registered again as %q, want agent-1 (its ID)", r.GetAgentId())
	}
	select {
	case u := <-other.updates:
		if u.GetStatus().GetTaskId() != "t1" {
			t.Fatalf("resent update %v", u)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the update the old leader never acknowledged was not resent to the new one")
	}
	select {
	case r := <-standby.regs:
		t.Fatalf("a standby registered the agent: %v", r)
	default:
	}
}

// A list of masters is a valid config; one bad entry is named.
func TestMasterListConfig(t *testing.T) {
	for _, m := range []string{"m1:5050", "m1:5050, m2:5050,m3:5050", "unix:///run/gearbox-master.sock"} {
		c := DefaultConfig()
		c.Master = m
		if err := c.Validate(); err != nil {
			t.Errorf("master = %q: %v", m, err)
		}
	}
}

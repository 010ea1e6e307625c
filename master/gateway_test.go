package master

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// An agent that floods heartbeats and never reads its stream leaves the
// master's send loop blocked in Send, which gRPC releases only once the
// stream ends, after Connect has returned. The agent registering again is
// not held up by it, and Run waits for the loop: when Run returns, no
// goroutine of any agent stream is left.
func TestRunWaitsForAgentStreamLoops(t *testing.T) {
	m, c, conn := startMaster(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := masterv1.NewAgentGatewayClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reg := &masterv1.Register{Hostname: "stalled", Resources: &masterv1.Resources{Cpus: 1, MemoryBytes: 1 << 30}}
	if err := st.Send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Register{Register: reg}}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil { // registered; never read again
		t.Fatal(err)
	}
	var sent atomic.Int64
	var flood sync.WaitGroup
	defer flood.Wait()
	defer cancel()
	flood.Go(func() {
		for ctx.Err() == nil {
			if st.Send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Heartbeat{Heartbeat: &masterv1.Heartbeat{Seq: uint64(sent.Load())}}}) != nil {
				return
			}
			sent.Add(1)
		}
	})
	// Enough acks to fill the master's queue (256) and both windows, or
	// the flood blocks because the master stopped reading: either way the
	// stream is stalled.
	deadline := time.Now().Add(30 * time.Second)
	for last := int64(-1); ; {
		n := sent.Load()
		if n >= 20000 || (n == last && n > 0) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stalled agent sent %d heartbeats in 30 s", n)
		}
		last = n
		time.Sleep(200 * time.Millisecond)
	}

	// The same agent on a new stream replaces the stalled one at once,
	// while the old send loop may still be blocked.
	agents, err := c.GetAgents(context.Background(), &masterv1.GetAgentsRequest{})
	if err != nil || len(agents.Agents) != 1 {
		t.Fatalf("agents: %v, %v", agents, err)
	}
	id := agents.Agents[0].Id
	again, err := connectAgent(t, conn, &masterv1.Register{AgentId: id, Hostname: "stalled"})
	if err != nil {
		t.Fatalf("the stalled agent registering again: %v", err)
	}
	if again.id != id {
		t.Fatalf("registered again as %s, want %s", again.id, id)
	}

	stopMaster(m)
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, loop := range []string{"(*agentStream).sendLoop", "(*agentStream).recvLoop", "(*agentStream).ackLoop"} {
		if strings.Contains(stacks, loop) {
			t.Errorf("%s still runs after Run returned:\n%s", loop, stacks)
		}
	}
}

package master

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

func dialTCP(t *testing.T, m *Master) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// Plaintext TCP, which every container on the host reaches, carries no
// identity: without --insecure it may not register an agent, read or
// change anything; the unix socket (root, here) may, and health is open.
func TestPlaintextTCPIsRefusedWithoutInsecure(t *testing.T) {
	m, c, conn := startMaster(t, nil)
	ctx := context.Background()
	tcp := dialTCP(t, m)
	oc := masterv1.NewOperatorClient(tcp)
	if _, err := oc.GetAgents(ctx, &masterv1.GetAgentsRequest{}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), m.cfg.Socket) {
		t.Errorf("GetAgents over plaintext TCP: %v", err)
	}
	if _, err := oc.MarkAgentGone(ctx, &masterv1.MarkAgentGoneRequest{AgentId: "agent-x"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("MarkAgentGone over plaintext TCP: %v", err)
	}
	if _, err := connectAgent(t, tcp, &masterv1.Register{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("an agent registered over plaintext TCP: %v", err)
	}
	if r, err := healthpb.NewHealthClient(tcp).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health over TCP: %v %v", r, err)
	}
	// Root on the unix socket does everything.
	a, err := connectAgent(t, conn, &masterv1.Register{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MarkAgentGone(ctx, &masterv1.MarkAgentGoneRequest{AgentId: a.id}); err != nil {
		t.Errorf("MarkAgentGone on the unix socket: %v", err)
	}
}

// --insecure is what it says: plaintext TCP may do everything.
func TestInsecureAllowsPlaintextTCP(t *testing.T) {
	m, _, _ := startMaster(t, func(c *Config) { c.Insecure = true })
	tcp := dialTCP(t, m)
	if _, err := masterv1.NewOperatorClient(tcp).GetAgents(context.Background(), &masterv1.GetAgentsRequest{}); err != nil {
		t.Errorf("GetAgents with --insecure: %v", err)
	}
	a, err := connectAgent(t, tcp, &masterv1.Register{})
	if err != nil {
		t.Fatalf("an agent with --insecure: %v", err)
	}
	a.cancel()
}

package master

import (
	"context"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/peercred"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
)

// Who may do what on the master:
//
//	agent      AgentGateway.Connect: register and report
//	readonly   Operator's Get*, ReconcileTasks, Subscribe
//	operator   readonly, and LaunchTask, KillTask, MarkAgentGone
//	framework  Scheduler.Connect: any client certificate the CA signed;
//	           which roles it may register is the [[frameworks]] ACL
//	           (frameworks.go), checked at subscribe
//
// Three ways in:
//
//   - The unix socket (--socket, mode 0600, owned by the master's user):
//     the kernel says who the peer is (internal/peercred); root and the
//     master's own user may do everything. Containers cannot reach it: it
//     is a path in the host's mount namespace, not an address on the
//     network they share with the host. This is how the CLI, gearbox dev
//     and agents on the master's own host talk to a master without TLS.
//   - TCP with mutual TLS: by the common name of the client's certificate
//     (--agent-cn, --readonly-cn, --operator-cn); with no names given,
//     every certificate the CA signed may do everything (the master says so
//     at start).
//   - Plaintext TCP carries no identity, and every container on the host
//     shares the host's network (127.0.0.1 included): without --insecure it
//     serves health and reflection only. --insecure means what it says:
//     anyone who reaches --listen, every container on this host included,
//     may register agents, launch and kill tasks and mark agents gone.
//
// Health and reflection are open everywhere.

type masterRole int

const (
	roleNone masterRole = iota
	roleReadOnly
	roleOperator
)

func (r masterRole) String() string {
	return [...]string{"no", "readonly", "operator"}[r]
}

// operatorNeeds is the role each Operator call needs; one not listed
// needs operator (fail closed).
var operatorNeeds = map[string]masterRole{
	"GetFrameworks": roleReadOnly, "GetRoles": roleReadOnly, "GetWeights": roleReadOnly, "GetOffers": roleReadOnly,
	"GetHealth": roleReadOnly, "GetState": roleReadOnly, "GetAgents": roleReadOnly, "GetTasks": roleReadOnly,
	"ReconcileTasks": roleReadOnly, "Subscribe": roleReadOnly, "GetMasters": roleReadOnly,
}

type authorizer struct {
	enforce bool // TLS clients: only the names given
	// insecure: plaintext TCP clients may do everything.
	insecure bool
	socket   string
	listen   string
	agents   map[string]bool
	roles    map[string]masterRole
	// ownUID may use the unix socket as root may.
	ownUID uint32
}

func newAuthorizer(c Config) (*authorizer, error) {
	a := &authorizer{agents: map[string]bool{}, roles: map[string]masterRole{}, insecure: c.Insecure,
		socket: c.Socket, listen: c.Listen, ownUID: uint32(os.Geteuid())}
	for _, l := range []struct {
		flag string
		cns  []string
		fn   func(string)
	}{
		{"agent-cn", c.AgentCNs, func(cn string) { a.agents[cn] = true }},
		{"readonly-cn", c.ReadOnlyCNs, func(cn string) { a.roles[cn] = max(a.roles[cn], roleReadOnly) }},
		{"operator-cn", c.OperatorCNs, func(cn string) { a.roles[cn] = roleOperator }},
	} {
		for _, cn := range l.cns {
			if cn = strings.TrimSpace(cn); cn == "" {
				return nil, fmt.Errorf("%s: an empty common name", setting(l.flag))
			}
			l.fn(cn)
			a.enforce = true
		}
	}
	if a.enforce && c.TLSCert == "" {
		return nil, fmt.Errorf("%s name certificates: give %s too", setting("agent-cn", "readonly-cn", "operator-cn"), setting("tls-cert", "tls-key", "tls-client-ca"))
	}
	return a, nil
}

// identity is the common name of the client's certificate; ok is false
// without TLS.
func identity(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", false
	}
	return info.State.PeerCertificates[0].Subject.CommonName, true
}

func (a *authorizer) check(ctx context.Context, fullMethod string) error {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if svc != masterv1.AgentGateway_ServiceDesc.ServiceName && svc != masterv1.Operator_ServiceDesc.ServiceName &&
		svc != schedulerv1.Scheduler_ServiceDesc.ServiceName {
		return nil // health and reflection
	}
	if pc, ok := peercred.FromContext(ctx); ok {
		if pc.UID == 0 || pc.UID == a.ownUID {
			return nil
		}
		return status.Errorf(codes.PermissionDenied, "%s: unix peer %s may not use the master's socket: only root and the master's own user may", method, pc)
	}
	cn, tls := identity(ctx)
	if !tls {
		if a.insecure {
			return nil
		}
		via := "through the master's unix socket (gearbox --master unix://" + a.socket + ")"
		if a.socket == "" {
			via = "through the master's unix socket (start it with --socket)"
		}
		return status.Errorf(codes.PermissionDenied, "%s over plaintext TCP (%s) is refused: it carries no identity and every container on the master's host shares its network. "+
			"Connect %s, or with mutual TLS (--tls-cert, --tls-key, --tls-client-ca); --insecure allows anyone who reaches %s", method, a.listen, via, a.listen)
	}
	if !a.enforce {
		return nil
	}
	switch svc {
	case masterv1.AgentGateway_ServiceDesc.ServiceName:
		if !a.agents[cn] {
			return status.Errorf(codes.PermissionDenied, "certificate %q may not register as an agent: the master's --agent-cn lists who may", cn)
		}
	case masterv1.Operator_ServiceDesc.ServiceName:
		need, ok := operatorNeeds[method]
		if !ok {
			need = roleOperator
		}
		if have := a.roles[cn]; have < need {
			return status.Errorf(codes.PermissionDenied, "%s needs the %s role; certificate %q has %s role: the master's --operator-cn and --readonly-cn grant them", method, need, cn, have)
		}
	}
	return nil
}

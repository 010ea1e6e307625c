package master

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// Who may do what on the master, by the common name of the client's
// certificate (mutual TLS):
//
//	agent      AgentGateway.Connect: register and report
//	readonly   Operator's Get*, ReconcileTasks, Subscribe
//	operator   readonly, and LaunchTask, KillTask, MarkAgentGone
//
// With no names given, every certificate the CA signed may do everything
// (the master says so at start). Without TLS (loopback only) there is no
// identity and every call is allowed. Health and reflection are open.

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
	"GetHealth": roleReadOnly, "GetState": roleReadOnly, "GetAgents": roleReadOnly, "GetTasks": roleReadOnly,
	"ReconcileTasks": roleReadOnly, "Subscribe": roleReadOnly,
}

type authorizer struct {
	enforce bool
	agents  map[string]bool
	roles   map[string]masterRole
}

func newAuthorizer(c Config) (*authorizer, error) {
	a := &authorizer{agents: map[string]bool{}, roles: map[string]masterRole{}}
	for _, l := range []struct {
		flag string
		cns  []string
		fn   func(string)
	}{
		{"--agent-cn", c.AgentCNs, func(cn string) { a.agents[cn] = true }},
		{"--readonly-cn", c.ReadOnlyCNs, func(cn string) { a.roles[cn] = max(a.roles[cn], roleReadOnly) }},
		{"--operator-cn", c.OperatorCNs, func(cn string) { a.roles[cn] = roleOperator }},
	} {
		for _, cn := range l.cns {
			if cn = strings.TrimSpace(cn); cn == "" {
				return nil, fmt.Errorf("%s: an empty common name", l.flag)
			}
			l.fn(cn)
			a.enforce = true
		}
	}
	if a.enforce && c.TLSCert == "" {
		return nil, fmt.Errorf("--agent-cn, --readonly-cn and --operator-cn name certificates: give --tls-cert, --tls-key and --tls-client-ca too")
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
	if !a.enforce {
		return nil
	}
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	cn, _ := identity(ctx)
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

package agent

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gearboxd/gearbox/internal/peercred"
	"github.com/gearboxd/gearbox/internal/tlsutil"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Role is what a client may do. Each role includes those below it.
type Role int

const (
	RoleNone Role = iota
	// RoleReadOnly reads state, waits and reads logs.
	RoleReadOnly
	// RoleOperator also launches, kills and removes containers and manages images.
	RoleOperator
	// RoleDebug also opens debug sessions (a root shell in a container).
	RoleDebug
)

var roleNames = map[string]Role{"readonly": RoleReadOnly, "operator": RoleOperator, "debug": RoleDebug}

func (r Role) String() string {
	for n, v := range roleNames {
		if v == r {
			return n
		}
	}
	return "none"
}

// ParseRole reads a role name; "" is RoleNone.
func ParseRole(s string) (Role, error) {
	if s == "" || s == "none" {
		return RoleNone, nil
	}
	if r, ok := roleNames[s]; ok {
		return r, nil
	}
	return RoleNone, fmt.Errorf("unknown role %q: use readonly, operator or debug", s)
}

// needs is the role each Agent API call requires; a call not listed needs
// RoleDebug (fail closed). Other services (health, reflection) are open.
var needs = map[string]Role{
	"GetHealth": RoleReadOnly, "GetVersion": RoleReadOnly, "GetState": RoleReadOnly,
	"GetContainers": RoleReadOnly, "WaitContainer": RoleReadOnly, "ReadLogs": RoleReadOnly,
	"ListImages": RoleReadOnly,
	"ListFiles":  RoleOperator, "ReadFile": RoleOperator, "TagImage": RoleOperator, "PruneImages": RoleOperator,
	"LaunchContainer": RoleOperator, "KillContainer": RoleOperator, "RemoveContainer": RoleOperator,
	"PullImage": RoleOperator, "ImportImage": RoleOperator, "RemoveImage": RoleOperator,
}

// authorizer decides a client's role from the [roles] config.
type authorizer struct {
	rules       map[string]Role // identity → role
	unixDefault Role
	tcpDefault  Role
}

func newAuthorizer(c Roles) (*authorizer, error) {
	a := &authorizer{rules: map[string]Role{}}
	var err error
	if a.unixDefault, err = ParseRole(c.UnixDefault); err != nil {
		return nil, fmt.Errorf("config key roles.unix_default: %w", err)
	}
	if a.tcpDefault, err = ParseRole(c.TCPDefault); err != nil {
		return nil, fmt.Errorf("config key roles.tcp_default: %w", err)
	}
	for role, ids := range map[Role][]string{RoleReadOnly: c.ReadOnly, RoleOperator: c.Operator, RoleDebug: c.Debug} {
		for _, id := range ids {
			if err := checkIdentity(id); err != nil {
				return nil, fmt.Errorf("config key roles.%s: %w", role, err)
			}
			if role > a.rules[id] {
				a.rules[id] = role
			}
		}
	}
	return a, nil
}

func checkIdentity(id string) error {
	kind, val, ok := strings.Cut(id, ":")
	switch {
	case !ok || val == "":
		return fmt.Errorf("identity %q: write uid:N, gid:N or cn:NAME", id)
	case kind == "uid" || kind == "gid":
		if _, err := strconv.ParseUint(val, 10, 32); err != nil {
			return fmt.Errorf("identity %q: %s takes a number", id, kind)
		}
	case kind != "cn":
		return fmt.Errorf("identity %q: write uid:N, gid:N or cn:NAME", id)
	}
	return nil
}

// roleOf returns a client's identity and role.
func (a *authorizer) roleOf(ctx context.Context) (string, Role) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "unknown", RoleNone
	}
	switch info := p.AuthInfo.(type) {
	case peercred.Info:
		// Root on the host already owns the agent (its config, its keys,
		// containerd's socket): no rule takes anything from it.
		if info.UID == 0 {
			return info.String(), RoleDebug
		}
		// Supplementary groups count as the primary one does: a user put
		// into the ops group is in it whatever its login group.
		best, matched := RoleNone, false
		for _, id := range info.IDs() {
			if r, ok := a.rules[id]; ok {
				matched = true
				best = max(best, r)
			}
		}
		if !matched {
			best = a.unixDefault
		}
		return info.String(), best
	case credentials.TLSInfo:
		if len(info.State.PeerCertificates) == 0 {
			return "tls without certificate", RoleNone
		}
		id := "cn:" + info.State.PeerCertificates[0].Subject.CommonName
		if r, ok := a.rules[id]; ok {
			return id, r
		}
		return id, a.tcpDefault
	}
	return "insecure tcp client", a.tcpDefault
}

// check is PermissionDenied when the call needs more than the caller's role
// (grpcserver runs it before every call).
func (a *authorizer) check(ctx context.Context, fullMethod string) error {
	_, err := a.checkRole(ctx, fullMethod)
	return err
}

// checkRole returns the caller's role, or PermissionDenied when the call
// needs more.
func (a *authorizer) checkRole(ctx context.Context, fullMethod string) (Role, error) {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if svc != agentv1.Agent_ServiceDesc.ServiceName {
		return RoleNone, nil // health and reflection are open
	}
	need, ok := needs[method]
	if !ok {
		need = RoleDebug
	}
	id, role := a.roleOf(ctx)
	if role < need {
		return role, status.Errorf(codes.PermissionDenied, "%s needs the %s role; this client (%s) has %s: an operator of the agent grants roles in its config ([roles])", method, need, id, role)
	}
	return role, nil
}

// redactUnary and redactStream run after check (grpcserver's Authorize) and
// redact what a caller below operator may not see.
func (a *authorizer) redactUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	role, err := a.checkRole(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	resp, err := handler(ctx, req)
	if m, ok := resp.(proto.Message); ok && err == nil && role < RoleOperator {
		redactEnv(m.ProtoReflect())
	}
	return resp, err
}

func (a *authorizer) redactStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	role, err := a.checkRole(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	if role < RoleOperator {
		ss = redactingStream{ss}
	}
	return handler(srv, ss)
}

// Environments are operator-only: they are where secrets live (passwords,
// tokens), and a readonly client — a dashboard, a monitoring group — has
// no use for their values. For a caller below operator every container in
// a response (GetContainers, WaitContainer, …) keeps its variables' names,
// so that inspect still shows what is set, and each value becomes
// RedactedValue. Responses are walked whole, so a container in a response
// added later is redacted too.

// RedactedValue replaces an environment variable's value for callers
// below the operator role.
const RedactedValue = "<redacted: operator only>"

var containerName = (&agentv1.Container{}).ProtoReflect().Descriptor().FullName()

func redactEnv(m protoreflect.Message) {
	if m.Descriptor().FullName() == containerName {
		if c, ok := m.Interface().(*agentv1.Container); ok {
			// A new slice: the response may share the old one with the
			// containerizer's own records.
			env := make([]string, len(c.Env))
			for i, e := range c.Env {
				k, _, _ := strings.Cut(e, "=")
				env[i] = k + "=" + RedactedValue
			}
			c.Env = env
		}
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind {
			return true
		}
		switch {
		case fd.IsList():
			for i, l := 0, v.List(); i < l.Len(); i++ {
				redactEnv(l.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Kind() == protoreflect.MessageKind {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					redactEnv(mv.Message())
					return true
				})
			}
		default:
			redactEnv(v.Message())
		}
		return true
	})
}

type redactingStream struct{ grpc.ServerStream }

func (s redactingStream) SendMsg(m any) error {
	if pm, ok := m.(proto.Message); ok {
		redactEnv(pm.ProtoReflect())
	}
	return s.ServerStream.SendMsg(m)
}

// tcpCreds are the TCP listener's credentials: TLS with required client
// certificates from the configured CA, or none when insecure is explicit.
func tcpCreds(c TCP) (credentials.TransportCredentials, error) {
	if c.Insecure {
		return nil, nil
	}
	cfg, err := tlsutil.Server(c.Cert, c.Key, c.ClientCA)
	if err != nil {
		return nil, fmt.Errorf("config keys tcp.cert, tcp.key, tcp.client_ca: %w", err)
	}
	return credentials.NewTLS(cfg), nil
}

package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

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
	"ListImages":      RoleReadOnly,
	"LaunchContainer": RoleOperator, "KillContainer": RoleOperator, "RemoveContainer": RoleOperator,
	"PullImage": RoleOperator, "ImportImage": RoleOperator, "RemoveImage": RoleOperator,
}

// unixPeer is the identity of a unix socket client, from SO_PEERCRED.
type unixPeer struct {
	credentials.CommonAuthInfo
	uid, gid uint32
}

func (unixPeer) AuthType() string { return "unix-peercred" }

// peerCreds are transport credentials for the unix socket: no encryption,
// but the peer's uid and gid, read from the kernel, become its identity.
type peerCreds struct{}

func (peerCreds) ClientHandshake(ctx context.Context, _ string, c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, unixPeer{}, nil
}

func (peerCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, nil, errors.New("peer credentials need a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) { cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, nil, err
	}
	if cerr != nil {
		return nil, nil, fmt.Errorf("reading the peer's credentials: %w", cerr)
	}
	return c, unixPeer{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}, uid: cred.Uid, gid: cred.Gid}, nil
}

func (peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "unix-peercred"}
}
func (p peerCreds) Clone() credentials.TransportCredentials { return p }
func (peerCreds) OverrideServerName(string) error           { return nil }

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
	case unixPeer:
		ids := []string{fmt.Sprintf("uid:%d", info.uid), fmt.Sprintf("gid:%d", info.gid)}
		best := RoleNone
		matched := false
		for _, id := range ids {
			if r, ok := a.rules[id]; ok {
				matched = true
				best = max(best, r)
			}
		}
		if !matched {
			best = a.unixDefault
		}
		return ids[0] + "," + ids[1], best
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

func (a *authorizer) check(ctx context.Context, fullMethod string) error {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if svc != agentv1.Agent_ServiceDesc.ServiceName {
		return nil // health and reflection are open
	}
	need, ok := needs[method]
	if !ok {
		need = RoleDebug
	}
	id, role := a.roleOf(ctx)
	if role < need {
		return status.Errorf(codes.PermissionDenied, "%s needs the %s role; this client (%s) has %s: an operator of the agent grants roles in its config ([roles])", method, need, id, role)
	}
	return nil
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

package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net"
	"slices"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/peercred"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func unixCtx(uid, gid uint32, groups ...uint32) context.Context {
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.UnixAddr{}, AuthInfo: peercred.Info{UID: uid, GID: gid, Groups: groups}})
}

func tlsCtx(cn string) context.Context {
	info := credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{{Subject: pkix.Name{CommonName: cn}}}}}
	return peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: info})
}

func TestRoles(t *testing.T) {
	a, err := newAuthorizer(Roles{
		ReadOnly: []string{"gid:1001", "cn:monitor"}, Operator: []string{"cn:deployer", "uid:1000", "gid:1500"}, Debug: []string{"uid:4000"},
		UnixDefault: "readonly", TCPDefault: "",
	})
	if err != nil {
		t.Fatal(err)
	}
	launch, get := "/gearbox.agent.v1.Agent/LaunchContainer", "/gearbox.agent.v1.Agent/GetContainers"
	for _, tc := range []struct {
		name   string
		ctx    context.Context
		method string
		ok     bool
	}{
		{"root launches", unixCtx(0, 0), launch, true},
		{"root has debug without a rule", unixCtx(0, 0), "/gearbox.agent.v1.Agent/LaunchNestedContainerSession", true},
		{"a supplementary group's role counts", unixCtx(2000, 2000, 2000, 1500), launch, true},
		{"the highest of primary and supplementary groups", unixCtx(2000, 1001, 1001, 1500), launch, true},
		{"a supplementary readonly group reads", unixCtx(2000, 2000, 1001), get, true},
		{"a supplementary readonly group cannot launch", unixCtx(2000, 2000, 1001), launch, false},
		{"a uid rule gives debug", unixCtx(4000, 4000), "/gearbox.agent.v1.Agent/LaunchNestedContainerSession", true},
		{"uid 1000 launches even in a readonly group", unixCtx(1000, 1001), launch, true},
		{"group 1001 reads", unixCtx(2000, 1001), get, true},
		{"group 1001 cannot launch", unixCtx(2000, 1001), launch, false},
		{"unnamed unix peer gets the unix default", unixCtx(3000, 3000), get, true},
		{"unnamed unix peer cannot launch", unixCtx(3000, 3000), launch, false},
		{"deployer launches", tlsCtx("deployer"), launch, true},
		{"monitor reads", tlsCtx("monitor"), get, true},
		{"monitor cannot launch", tlsCtx("monitor"), launch, false},
		{"unknown CN gets the tcp default (none)", tlsCtx("stranger"), get, false},
		{"an unlisted call needs debug", tlsCtx("deployer"), "/gearbox.agent.v1.Agent/LaunchNestedContainerSession", false},
		{"health is open", tlsCtx("stranger"), "/grpc.health.v1.Health/Check", true},
	} {
		err := a.check(tc.ctx, tc.method)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
		if err != nil && status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: code %v", tc.name, status.Code(err))
		}
	}
}

// With the default config, a member of socket_group whom no rule names
// may look (readonly) but not launch, exec or debug; root may do all.
func TestDefaultRolesGiveUnnamedUnixPeersTheLeastRole(t *testing.T) {
	a, err := newAuthorizer(DefaultConfig().Roles)
	if err != nil {
		t.Fatal(err)
	}
	if _, r := a.roleOf(unixCtx(1000, 1000, 1000, 27)); r != RoleReadOnly {
		t.Errorf("an unnamed unix peer has %s, want readonly", r)
	}
	if _, r := a.roleOf(unixCtx(0, 0)); r != RoleDebug {
		t.Errorf("root has %s, want debug", r)
	}
}

func TestRolesConfigErrors(t *testing.T) {
	for _, r := range []Roles{
		{ReadOnly: []string{"user:bob"}},
		{Operator: []string{"uid:abc"}},
		{Debug: []string{"cn:"}},
		{UnixDefault: "admin"},
	} {
		if _, err := newAuthorizer(r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	cfg := DefaultConfig()
	cfg.TCP.Listen = "127.0.0.1:7443"
	if err := cfg.Validate(); err == nil {
		t.Error("a TCP listener without TLS and without insecure was accepted")
	}
	cfg.TCP.Insecure = true
	if err := cfg.Validate(); err != nil {
		t.Errorf("explicitly insecure TCP refused: %v", err)
	}
}

// A readonly caller sees every container's variable names but not their
// values; an operator sees them whole; the handler's own slice (shared
// with the containerizer's records) is left as it was.
func TestEnvIsOperatorOnly(t *testing.T) {
	a, err := newAuthorizer(Roles{ReadOnly: []string{"uid:1000"}, Operator: []string{"uid:2000"}})
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"DB_PASSWORD=hunter2", "EMPTY=", "NOVALUE"}
	handler := func(context.Context, any) (any, error) {
		return &agentv1.GetContainersResponse{Containers: []*agentv1.Container{{Id: "a", Env: env}, {Id: "b"}}}, nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/gearbox.agent.v1.Agent/GetContainers"}
	for _, tc := range []struct {
		name string
		ctx  context.Context
		want []string
	}{
		{"readonly", unixCtx(1000, 1000), []string{"DB_PASSWORD=" + RedactedValue, "EMPTY=" + RedactedValue, "NOVALUE=" + RedactedValue}},
		{"operator", unixCtx(2000, 2000), env},
		{"root", unixCtx(0, 0), env},
	} {
		resp, err := a.redactUnary(tc.ctx, nil, info, handler)
		if err != nil {
			t.Fatal(err)
		}
		got := resp.(*agentv1.GetContainersResponse).Containers[0].Env
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s sees %q, want %q", tc.name, got, tc.want)
		}
	}
	if env[0] != "DB_PASSWORD=hunter2" {
		t.Errorf("redaction changed the handler's slice: %q", env)
	}
	// Streams too (WaitContainer's response shape, sent on a stream).
	var sent any
	ss := redactingStream{fakeStream{send: func(m any) { sent = m }}}
	ss.SendMsg(&agentv1.WaitContainerResponse{Container: &agentv1.Container{Env: []string{"TOKEN=x"}}})
	if got := sent.(*agentv1.WaitContainerResponse).Container.Env; !slices.Equal(got, []string{"TOKEN=" + RedactedValue}) {
		t.Errorf("stream sent %q", got)
	}
}

type fakeStream struct {
	grpc.ServerStream
	send func(any)
}

func (f fakeStream) SendMsg(m any) error { f.send(m); return nil }

// The sandbox files and image management calls are the operator's: a
// sandbox holds what the container wrote (secrets included).
func TestFilesAndImageCallsNeedOperator(t *testing.T) {
	for _, m := range []string{"ListFiles", "ReadFile", "TagImage", "PruneImages"} {
		if needs[m] != RoleOperator {
			t.Errorf("%s needs %v, want operator", m, needs[m])
		}
	}
}

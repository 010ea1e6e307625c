package master

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/tlsutil"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// testPKI writes a CA, a server certificate for 127.0.0.1 and client
// certificates with the given common names into dir.
func testPKI(t *testing.T, dir string, clients ...string) {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name string, der []byte, k *ecdsa.PrivateKey) {
		os.WriteFile(filepath.Join(dir, name+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		kb, _ := x509.MarshalECPrivateKey(k)
		os.WriteFile(filepath.Join(dir, name+".key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	}
	caKey := key()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test ca"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca", caDER, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	for i, cn := range append([]string{"server"}, clients...) {
		k := key()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if cn == "server" {
			tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		write(cn, der, k)
	}
}

// startTLSMaster starts a master with mutual TLS; dial returns a
// connection with the named client certificate.
func startTLSMaster(t *testing.T, mod func(*Config), clients ...string) (*Master, func(cn string) *grpc.ClientConn) {
	t.Helper()
	dir := t.TempDir()
	testPKI(t, dir, clients...)
	m, _, _ := startMaster(t, func(c *Config) {
		c.TLSCert, c.TLSKey, c.TLSClientCA = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key"), filepath.Join(dir, "ca.crt")
		if mod != nil {
			mod(c)
		}
	})
	return m, func(cn string) *grpc.ClientConn {
		tc, err := tlsutil.Client(filepath.Join(dir, "ca.crt"), filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key"))
		if err != nil {
			t.Fatal(err)
		}
		tc.MinVersion = tls.VersionTLS12
		conn, err := grpc.NewClient(m.Addr(), grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
}

// One certificate holds one live agent: a second registration without an
// ID (which would mint another) is refused, naming the limit; the first
// agent registering again under its ID is welcome; the limit is
// configurable.
func TestOneLiveAgentPerCertificate(t *testing.T) {
	_, dial := startTLSMaster(t, nil, "node1")
	conn := dial("node1")
	a, err := connectAgent(t, conn, &masterv1.Register{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		_, err := connectAgent(t, conn, &masterv1.Register{})
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-agents-per-identity 1") || !strings.Contains(err.Error(), a.id) {
			t.Fatalf("registration %d without an ID: %v", i, err)
		}
	}
	if _, err := connectAgent(t, conn, &masterv1.Register{AgentId: "agent-made-up"}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("registration under a new ID of its choosing: %v", err)
	}
	a.cancel()
	again, err := connectAgent(t, conn, &masterv1.Register{AgentId: a.id})
	if err != nil || again.id != a.id {
		t.Errorf("the agent again under its ID: %v %v", again, err)
	}

	_, dial2 := startTLSMaster(t, func(c *Config) { c.MaxAgentsPerIdentity = 2 }, "node1")
	conn2 := dial2("node1")
	for i := range 2 {
		if _, err := connectAgent(t, conn2, &masterv1.Register{}); err != nil {
			t.Fatalf("agent %d of 2: %v", i, err)
		}
	}
	if _, err := connectAgent(t, conn2, &masterv1.Register{}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("agent 3 of 2: %v", err)
	}
}

// --agent-identity ID=CN: CN's registration without an ID gets ID; no
// other certificate may take ID, even before CN first registers; CN may
// not register as another ID.
func TestPinnedAgentIdentities(t *testing.T) {
	_, dial := startTLSMaster(t, func(c *Config) { c.AgentIdentities = []string{"rack1-a=node1", "rack1-b=node2"} }, "node1", "node2", "rogue")
	if _, err := connectAgent(t, dial("rogue"), &masterv1.Register{AgentId: "rack1-a"}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `pinned to certificate "node1"`) {
		t.Errorf("another certificate took a pinned ID: %v", err)
	}
	a, err := connectAgent(t, dial("node1"), &masterv1.Register{})
	if err != nil || a.id != "rack1-a" {
		t.Fatalf("node1 without an ID got %v: %v", a, err)
	}
	if _, err := connectAgent(t, dial("node2"), &masterv1.Register{AgentId: "rack1-c"}); status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "rack1-b") {
		t.Errorf("node2 under an ID not pinned to it: %v", err)
	}
	if _, err := connectAgent(t, dial("node1"), &masterv1.Register{}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("node1's second agent while rack1-a is connected: %v", err)
	}

	base := DefaultConfig()
	for _, tc := range []struct {
		pins []string
		want string
	}{
		{[]string{"a1"}, "ID=CERTIFICATE_NAME"},
		{[]string{"a/1=x"}, "agent ID"},
		{[]string{"a1=x", "a1=y"}, "pinned twice"},
		{[]string{"a1=x"}, "agent_identity (--agent-identity) pins agent IDs to certificate names: give tls_cert, tls_key and tls_client_ca (--tls-cert, --tls-key, --tls-client-ca)"},
	} {
		c := base
		c.AgentIdentities = tc.pins
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.pins, err, tc.want)
		}
	}
}

// An agent may not offer more than the limits, nor report more tasks.
func TestAgentReportsAreBounded(t *testing.T) {
	_, _, conn := startMaster(t, func(c *Config) { c.MaxAgentTasks = 3 })
	for _, tc := range []struct {
		res  *masterv1.Resources
		want string
	}{
		{&masterv1.Resources{Cpus: 1e9, MemoryBytes: 1 << 30}, "--max-agent-cpus 4096"},
		{&masterv1.Resources{Cpus: 4, MemoryBytes: 1 << 62}, "--max-agent-memory"},
		{&masterv1.Resources{Cpus: 4, MemoryBytes: 1 << 30, DiskBytes: 1 << 62}, "--max-agent-disk"},
	} {
		_, err := connectAgent(t, conn, &masterv1.Register{Resources: tc.res})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want InvalidArgument naming %s", tc.res, err, tc.want)
		}
	}
	running := func(ids ...string) []*masterv1.TaskStatus {
		var out []*masterv1.TaskStatus
		for _, id := range ids {
			out = append(out, &masterv1.TaskStatus{TaskId: id, State: typesv1.TaskState_TASK_RUNNING})
		}
		return out
	}
	if _, err := connectAgent(t, conn, &masterv1.Register{Tasks: running("a", "b", "c", "d")}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "--max-agent-tasks") {
		t.Errorf("4 tasks reported with a limit of 3: %v", err)
	}
}

// Tasks an agent reports that the master never placed are adopted, but
// they do not pile up: each registration that no longer reports them
// forgets them, so repeated registrations with new task IDs leave at most
// --max-agent-tasks of them.
func TestAdoptedTasksDoNotAccumulate(t *testing.T) {
	_, c, conn := startMaster(t, func(c *Config) { c.MaxAgentTasks = 3 })
	ctx := context.Background()
	var id string
	for round := range 5 {
		var tasks []*masterv1.TaskStatus
		for k := range 3 {
			tasks = append(tasks, &masterv1.TaskStatus{TaskId: fmt.Sprintf("r%d-%d", round, k), State: typesv1.TaskState_TASK_RUNNING})
		}
		a, err := connectAgent(t, conn, &masterv1.Register{AgentId: id, Tasks: tasks})
		if err != nil {
			t.Fatal(err)
		}
		id = a.id
		a.cancel()
	}
	r, err := c.GetTasks(ctx, &masterv1.GetTasksRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, tk := range r.Tasks {
		got = append(got, tk.Id)
	}
	if strings.Join(got, ",") != "r4-0,r4-1,r4-2" {
		t.Errorf("the registry holds %v, want the last registration's three", got)
	}
}

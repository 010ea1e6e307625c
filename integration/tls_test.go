package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// pki is a CA and the certificates it signed, as PEM files in a dir.
type pki struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(dir, name string) (*pki, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, cert: cert, key: key}
	return p, writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der)
}

// issue writes NAME.crt and NAME.key signed by the CA.
func (p *pki) issue(name string, server bool) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return err
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := writePEM(filepath.Join(p.dir, name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	return writePEM(filepath.Join(p.dir, name+".key"), "EC PRIVATE KEY", kb)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// makeCerts makes the agent's CA with a server certificate and clients
// "deployer" and "viewer", and another CA with a client "intruder".
func makeCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	ca, err := newCA(dir, "ca")
	if err != nil {
		return err
	}
	for name, server := range map[string]bool{"agent": true, "deployer": false, "viewer": false} {
		if err := ca.issue(name, server); err != nil {
			return err
		}
	}
	other, err := newCA(dir, "other-ca")
	if err != nil {
		return err
	}
	return other.issue("intruder", false)
}

func tlsClient(t *testing.T, client string) agentv1.AgentClient {
	t.Helper()
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(h.tlsDir, "ca.crt"))
	pool.AppendCertsFromPEM(caPEM)
	cfg := &tls.Config{RootCAs: pool}
	if client != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(h.tlsDir, client+".crt"), filepath.Join(h.tlsDir, client+".key"))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	conn, err := grpc.NewClient(h.tcpAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return agentv1.NewAgentClient(conn)
}

func TestTCPNeedsClientCertificates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, client := range []string{"", "intruder"} {
		if _, err := tlsClient(t, client).GetState(ctx, &agentv1.GetStateRequest{}); err == nil {
			t.Errorf("client %q was served", client)
		}
	}
	if _, err := tlsClient(t, "viewer").GetState(ctx, &agentv1.GetStateRequest{}); err != nil {
		t.Errorf("viewer cannot read: %v", err)
	}
	_, err := tlsClient(t, "viewer").LaunchContainer(ctx, &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}})
	wantCode(t, err, codes.PermissionDenied, "operator role")
	// The operator, through the real CLI.
	r := h.cli("--agent", "tcp://"+h.tcpAddr, "--tls-ca", filepath.Join(h.tlsDir, "ca.crt"),
		"--tls-cert", filepath.Join(h.tlsDir, "deployer.crt"), "--tls-key", filepath.Join(h.tlsDir, "deployer.key"),
		"run", "--rm", testImage, "echo", "over mTLS")
	if r.code != 0 || r.stdout != "over mTLS\n" {
		t.Errorf("operator over TCP: %s", r)
	}
}

// On the unix socket the kernel says who the client is: nobody (gid 65534,
// nogroup, which owns the socket) is named by no rule and gets the least
// role, readonly.
func TestUnixPeerRoles(t *testing.T) {
	run := func(args ...string) result { return cliAsNobody(args...) }
	if r := run("ps"); r.code != 0 {
		t.Errorf("nobody cannot read: %s", r)
	}
	if r := run("run", "--rm", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "needs the operator role") || !strings.Contains(r.stderr, "gid:65534") {
		t.Errorf("nobody launched: %s", r)
	}
}

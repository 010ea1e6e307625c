package etcdstore

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/master/store"
)

// pki writes ca.crt, and NAME.crt/NAME.key signed by it, for each name
// ("server" gets 127.0.0.1 and server use; the others client use).
func pki(t *testing.T, dir string, names ...string) {
	t.Helper()
	pemFile := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caCert := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "etcd test ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, caCert, caCert, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	pemFile("ca.crt", "CERTIFICATE", der)
	for i, name := range names {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		c := &x509.Certificate{SerialNumber: big.NewInt(int64(i) + 2), Subject: pkix.Name{CommonName: name},
			KeyUsage: x509.KeyUsageDigitalSignature, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if name == "server" {
			c.ExtKeyUsage, c.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		if der, err = x509.CreateCertificate(rand.Reader, c, caCert, k.Public(), caKey); err != nil {
			t.Fatal(err)
		}
		pemFile(name+".crt", "CERTIFICATE", der)
		kd, _ := x509.MarshalECPrivateKey(k)
		pemFile(name+".key", "EC PRIVATE KEY", kd)
	}
}

func loopbackPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// A Store reaches an etcd that serves mutual TLS with --etcd-ca,
// --etcd-cert and --etcd-key, and is refused without a client certificate.
// (internal/etcdtest runs plain-HTTP members, so this one member is
// started here.)
func TestTLS(t *testing.T) {
	dir := t.TempDir()
	pki(t, dir, "server", "master")
	client := fmt.Sprintf("https://127.0.0.1:%d", loopbackPort(t))
	peer := fmt.Sprintf("http://127.0.0.1:%d", loopbackPort(t))
	log, err := os.Create(filepath.Join(dir, "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command("etcd", "--name", "tls", "--data-dir", filepath.Join(dir, "data"),
		"--listen-client-urls", client, "--advertise-client-urls", client,
		"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer, "--initial-cluster", "tls="+peer,
		"--cert-file", filepath.Join(dir, "server.crt"), "--key-file", filepath.Join(dir, "server.key"),
		"--trusted-ca-file", filepath.Join(dir, "ca.crt"), "--client-cert-auth")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting etcd (Debian's etcd-server; hack/install-deps.sh installs it): %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	ctx := context.Background()
	cfg := Config{Endpoints: []string{client}, CA: filepath.Join(dir, "ca.crt"), Cert: filepath.Join(dir, "master.crt"),
		Key: filepath.Join(dir, "master.key"), DialTimeout: 30 * time.Second}
	s, err := Open(ctx, cfg)
	if err != nil {
		b, _ := os.ReadFile(log.Name())
		t.Fatalf("open over TLS: %v\netcd log:\n%s", err, b)
	}
	defer s.Close()
	if err := s.Apply(ctx, store.Batch{Tasks: []store.Task{task("t-1")}}); err != nil {
		t.Fatal(err)
	}
	if got := taskIDs(t, s); len(got) != 1 || got[0] != "t-1" {
		t.Fatalf("tasks over TLS: %v", got)
	}
	cfg.Cert, cfg.Key, cfg.DialTimeout = "", "", 2*time.Second
	if _, err := Open(ctx, cfg); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "client certificate") {
		t.Fatalf("open without a client certificate: %v, want it refused", err)
	}
}

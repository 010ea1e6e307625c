// Package tlsutil builds the mutual-TLS configs of gearbox's TCP APIs: the
// agent's, the master's, and their clients'. Errors name the file at fault;
// callers add the flag or config key that named it.
package tlsutil

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

func pool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return p, nil
}

// Server: this certificate, and clients must present one signed by clientCA.
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certificate and key: %w", err)
	}
	p, err := pool(clientCAFile)
	if err != nil {
		return nil, fmt.Errorf("client CA: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p, MinVersion: tls.VersionTLS12}, nil
}

// Client: trust servers signed by ca, and present this certificate.
func Client(caFile, certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate and key: %w", err)
	}
	p, err := pool(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: p, MinVersion: tls.VersionTLS12}, nil
}

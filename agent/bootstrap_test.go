package agent

import (
	"log/slog"
	"net"
	"path/filepath"
	"testing"
)

// freePort is a loopback address nothing listens on (as far as one can
// know: it was free a moment ago).
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// A start-up that fails after the TCP listener opened (the socket's group
// cannot be set, the metrics port is taken) leaves nothing listening: not
// the TCP port, not the API socket. Before bootstrap, the TCP server was
// already serving at that point and kept serving after Run returned.
func TestFailedStartLeavesNoListener(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name   string
		modify func(*Config)
	}{
		{"socket group", func(c *Config) { c.SocketGroup = "gearbox-test-no-such-group" }},
		{"metrics listener", func(c *Config) { c.MetricsListen = busy.Addr().String() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			sock := filepath.Join(t.TempDir(), "agent.sock")
			cfg.Listen = "unix://" + sock
			cfg.TCP = TCP{Listen: freePort(t), Insecure: true}
			tc.modify(&cfg)
			a := &Agent{cfg: cfg, log: slog.New(slog.DiscardHandler)}
			e, err := a.openEndpoints(nil)
			if err == nil {
				e.close()
				t.Fatal("start-up succeeded; the test needs it to fail after the TCP listener opened")
			}
			l, err := net.Listen("tcp", cfg.TCP.Listen)
			if err != nil {
				t.Fatalf("after a failed start-up, TCP %s is still taken: %v", cfg.TCP.Listen, err)
			}
			l.Close()
			if c, err := net.Dial("unix", sock); err == nil {
				c.Close()
				t.Fatalf("after a failed start-up, the API socket %s still accepts connections", sock)
			}
		})
	}
}

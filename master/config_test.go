package master

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The example a user copies loads, is valid, and says what it seems to.
func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("../examples/master.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Listen = "0.0.0.0:5050"
	want.AgentRemovalRateLimit = "1/10mins"
	want.MetricsListen = "127.0.0.1:9465"
	want.TLSCert, want.TLSKey, want.TLSClientCA = "/etc/gearbox/tls/master.crt", "/etc/gearbox/tls/master.key", "/etc/gearbox/tls/ca.crt"
	want.AgentCNs, want.ReadOnlyCNs, want.OperatorCNs = []string{"agent-1", "agent-2"}, []string{"dashboard"}, []string{"deployer"}
	want.Frameworks = []FrameworkACL{{Principal: "marathon", Roles: []string{"web", "services"}}}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("example config read as\n%+v\nwant\n%+v", cfg, want)
	}
}

func TestConfigFileErrors(t *testing.T) {
	for _, c := range []struct{ toml, want string }{
		{`work_dri = "/x"`, "work_dri"},                       // misspelt: not ignored
		{`agent_ping_timeout = "soon"`, "agent_ping_timeout"}, // not a duration
		{`event_buffer = "many"`, "event_buffer"},
		{`listen = = 1`, "master.toml"}, // malformed: names the file
	} {
		p := filepath.Join(t.TempDir(), "master.toml")
		os.WriteFile(p, []byte(c.toml), 0o644)
		if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v does not mention %s", c.toml, err, c.want)
		}
	}
	p := filepath.Join(t.TempDir(), "master.toml")
	os.WriteFile(p, []byte("agent_ping_timeout = \"1m30s\"\nsubscriber_batch_window = \"0s\"\n"), 0o644)
	cfg, err := LoadConfig(p)
	if err != nil || cfg.AgentPingTimeout != 90*time.Second || cfg.SubscriberBatchWindow != 0 || cfg.EventBuffer != DefaultConfig().EventBuffer {
		t.Errorf("read as %+v (%v)", cfg, err)
	}
}

// Validate names the config key at fault and the flag that overrides it,
// as the file and the flags both set it.
func TestValidateNamesKeyAndFlag(t *testing.T) {
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Listen = "" }, "listen (--listen): give host:port"},
		{func(c *Config) { c.WorkDir = "" }, "work_dir (--work-dir): give a directory"},
		{func(c *Config) { c.AgentPingTimeout = 0 }, "agent_ping_timeout (--agent-ping-timeout) must be positive"},
		{func(c *Config) { c.MaxAgentPingTimeouts = 0 }, "max_agent_ping_timeouts (--max-agent-ping-timeouts) must be at least 1"},
		{func(c *Config) { c.SubscriberBatchWindow = 2 * time.Second }, "subscriber_batch_window (--subscriber-batch-window)"},
		{func(c *Config) { c.MaxAgentMemory = 0 }, "max_agent_memory and max_agent_disk (--max-agent-memory, --max-agent-disk) must be positive"},
		{func(c *Config) { c.OfferTimeout = -1 }, "offer_timeout (--offer-timeout) must not be negative"},
		{func(c *Config) { c.AgentRemovalRateLimit = "fast" }, "agent_removal_rate_limit (--agent-removal-rate-limit): "},
		{func(c *Config) { c.AgentIdentities = []string{"a1"} }, `agent_identity (--agent-identity) "a1": write AGENT_ID=CERTIFICATE_NAME`},
		{func(c *Config) { c.TLSCert, c.TLSKey, c.TLSClientCA, c.ReadOnlyCNs = "a", "b", "c", []string{""} }, "readonly_cn (--readonly-cn): an empty common name"},
		{func(c *Config) { c.TLSKey = "k" }, "tls_cert, tls_key and tls_client_ca (--tls-cert, --tls-key, --tls-client-ca) go together"},
		{func(c *Config) { c.Socket = "" }, "give socket (--socket) (local clients), tls_cert, tls_key and tls_client_ca (--tls-cert, --tls-key, --tls-client-ca), or insecure (--insecure)"},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v, want %q", err, tc.want)
		}
	}
}

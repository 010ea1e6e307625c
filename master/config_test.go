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

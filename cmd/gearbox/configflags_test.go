package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gearboxd/gearbox/agent"
	"github.com/gearboxd/gearbox/master"
)

// printConfig runs gearbox with args (ending in --print-config) and reads
// the effective config it prints into cfg.
func printConfig(t *testing.T, cfg any, args ...string) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		t.Fatalf("gearbox %v: %v", args, err)
	}
	if _, err := toml.Decode(out.String(), cfg); err != nil {
		t.Fatalf("printed config does not read back: %v\n%s", err, out.String())
	}
}

// Flags override the file key by key; what neither gives keeps the
// file's value, then the default.
func TestAgentFlagsOverrideTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.toml")
	os.WriteFile(p, []byte("version = 1\nnamespace = \"fromfile\"\nwork_dir = \"/file\"\nmax_sessions = 3\nisolation = [\"cgroups/mem\"]\n"), 0o644)
	var cfg agent.Config
	printConfig(t, &cfg, "agent", "--config", p, "--work-dir", "/flag", "--isolation", "cgroups/cpu, cgroups/pids", "--print-config")
	if cfg.WorkDir != "/flag" || cfg.Namespace != "fromfile" || cfg.MaxSessions != 3 || cfg.RunDir != agent.DefaultConfig().RunDir ||
		len(cfg.Isolation) != 2 || cfg.Isolation[0] != "cgroups/cpu" || cfg.Isolation[1] != "cgroups/pids" {
		t.Errorf("effective config %+v", cfg)
	}
	cfg = agent.Config{}
	printConfig(t, &cfg, "agent", "--config", p, "--isolation", "", "--max-sessions", "9", "--print-config")
	if len(cfg.Isolation) != 0 || cfg.MaxSessions != 9 || cfg.WorkDir != "/file" {
		t.Errorf("effective config %+v", cfg)
	}
}

func TestMasterFlagsOverrideTheFile(t *testing.T) {
	var cfg master.Config
	printConfig(t, &cfg, "master", "--config", "../../examples/master.toml", "--agent-ping-timeout", "2s", "--operator-cn", "a,b", "--operator-cn", "c", "--print-config")
	if cfg.AgentPingTimeout != 2*time.Second || cfg.Listen != "0.0.0.0:5050" || cfg.MaxAgentPingTimeouts != 3 ||
		len(cfg.OperatorCNs) != 3 || cfg.OperatorCNs[2] != "c" || cfg.ReadOnlyCNs[0] != "dashboard" {
		t.Errorf("effective config %+v", cfg)
	}
	cfg = master.Config{}
	printConfig(t, &cfg, "master", "--print-config")
	if d := master.DefaultConfig(); cfg.Listen != d.Listen || cfg.RegistryMaxAgentAge != d.RegistryMaxAgentAge || cfg.SubscriberBatchWindow != d.SubscriberBatchWindow {
		t.Errorf("no file, no flags: %+v, want the defaults %+v", cfg, d)
	}
}

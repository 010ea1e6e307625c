package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
)

func TestExampleConfigLoads(t *testing.T) {
	cfg, err := LoadConfig("../examples/agent.toml")
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Runtimes["crun"].Binary != "crun" || cfg.Registries.Insecure[0] != "registry.internal:5000" ||
		cfg.Logging.Driver != "logrotate" || cfg.Logging.MaxFiles != 5 || cfg.Loggers["syslog"].Args["socket"] != "/dev/log" ||
		cfg.TCP.ClientCA != "/etc/gearbox/tls/ca.crt" || cfg.Roles.Operator[0] != "cn:deployer" || cfg.UnknownContainers != "destroy" ||
		cfg.ImportMaxSize != 4<<30 || cfg.MaxImports != 2 ||
		cfg.GCDelay != 168*time.Hour || cfg.ImageGC.HighThreshold != 85 || cfg.ImageGC.MinAge != 2*time.Minute || cfg.Isolation == nil ||
		cfg.CNISubnet != "10.89.0.0/16" || cfg.ContainerDNS.Search[0] != "internal.example" || cfg.DefaultNetwork != "host" {
		t.Errorf("example config read wrongly: %+v", cfg)
	}
}

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ toml, key string }{
		{"version = 2", "version"},
		{`work_dir = "relative"`, "work_dir"},
		{`listen = "tcp://0.0.0.0:1"`, "listen"},
		{`listen = "unix://relative.sock"`, "listen"},
		{`default_runtime = "nope"`, "default_runtime"},
		{"[runtimes.x]\nbinary = \"crun\"", "runtimes.x.type"},
		{`namespace = ""`, "namespace"},
		{"[logging]\ndriver = \"nope\"", "logging.driver"},
		{"[logging]\nmax_size = \"lots\"", "logging.max_size"},
		{"[logging]\nmax_size = \"2GiB\"", "logging.max_size"},
		{"[logging]\nmax_files = 0", "logging.max_files"},
		{"[logging]\nmode = \"sometimes\"", "logging.mode"},
		{"[loggers.sandbox]\npath = \"/x\"", "loggers.sandbox"},
		{"[loggers.x]\npath = \"rel\"", "loggers.x.path"},
		{`metrics_listen = "nocolon"`, "metrics_listen"},
		{`import_max_size = "big"`, "import_max_size"},
		{`import_max_size = "1k"`, "import_max_size"},
		{"max_imports = 0", "max_imports"},
		{`cni_subnet = "10.1.2.3"`, "cni_subnet"},
		{`master = "m1:5050,,m3:5050"`, `master: master address 2 of 3 ("")`},
		{`master = "m1:5050,m2"`, `master: master address 2 of 2 ("m2")`},
		{`master = "unix://relative.sock"`, "master"},
		{`cni_bridge = "a-bridge-name-too-long"`, "cni_bridge"},
		{`default_network = ""`, "default_network"},
		{"[container_dns]\nservers = [\"dns.example\"]", "container_dns.servers"},
		{`resources = "ports:[1-70000]"`, "resources"},
		{`resources = "cpus:many"`, "resources"},
		{`resources = "gpus:1"`, "resources"},
		{`attributes = "rack"`, "attributes"},
	} {
		p := filepath.Join(t.TempDir(), "agent.toml")
		os.WriteFile(p, []byte("version = 1\n"+strings.Replace(tc.toml, "version = 2", "", 1)), 0o644)
		if tc.key == "version" {
			os.WriteFile(p, []byte(tc.toml), 0o644)
		}
		cfg, err := LoadConfig(p)
		if err == nil {
			err = cfg.Validate()
		}
		// A value of the wrong form is refused by the TOML decoder, which
		// names the key its own way.
		if err == nil || !strings.Contains(err.Error(), "config key "+tc.key) && !strings.Contains(err.Error(), fmt.Sprintf("last key %q", tc.key)) {
			t.Errorf("%q: error %v does not name key %s", tc.toml, err, tc.key)
		}
	}
}

// Sizes, durations, resources and attributes are read once, into typed
// values; the effective config (--print-config) writes them as a person
// would and reads back the same.
func TestConfigTypedValuesRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.toml")
	os.WriteFile(p, []byte("version = 1\nresources = \"cpus:2; mem:512;ports:[31000-31010]\"\nattributes = \"zone:a; rack:r1\"\n"+
		"[logging]\nmax_size = \"64k\"\nmax_size_limit = \"2g\"\n"+
		"[[isolator_plugins]]\nname = \"q\"\nsocket = \"/run/q.sock\"\ntimeout = \"1m30s\"\n"), 0o644)
	cfg, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Logging.MaxSize != 64<<10 || cfg.Logging.MaxSizeLimit != 2<<30 || cfg.IsolatorPlugins[0].Timeout != 90*time.Second {
		t.Fatalf("read as max_size %d, max_size_limit %d, timeout %v", cfg.Logging.MaxSize, cfg.Logging.MaxSizeLimit, cfg.IsolatorPlugins[0].Timeout)
	}
	detected := ResourceSet{CPUs: 8, Memory: 1 << 30, Disk: 1 << 40}
	ports, _ := ParsePorts("[31000-31010]")
	if got, want := cfg.Resources.Over(detected), (ResourceSet{CPUs: 2, Memory: 512 << 20, Disk: 1 << 40, Ports: ports}); !reflect.DeepEqual(got, want) {
		t.Errorf("resources over %+v: %+v, want %+v", detected, got, want)
	}
	if want := (Attributes{"zone": "a", "rack": "r1"}); !reflect.DeepEqual(cfg.Attributes, want) {
		t.Errorf("attributes read as %v, want %v", cfg.Attributes, want)
	}
	var out strings.Builder
	if err := toml.NewEncoder(&out).Encode(cfg); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`max_size = "64KiB"`, `max_size_limit = "2GiB"`, `timeout = "1m30s"`,
		`resources = "cpus:2; mem:512;ports:[31000-31010]"`, `attributes = "rack:r1;zone:a"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("printed config lacks %s:\n%s", want, out.String())
		}
	}
	os.WriteFile(p, []byte(out.String()), 0o644)
	back, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, cfg) {
		t.Errorf("printed config read back as\n%+v\nwant\n%+v", back, cfg)
	}
}

func TestConfigRefusesUnknownKeys(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.toml")
	os.WriteFile(p, []byte("version = 1\nwork_dri = \"/x\"\n"), 0o644)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "work_dri") {
		t.Fatalf("misspelt key not reported: %v", err)
	}
}

func TestConfigMalformed(t *testing.T) {
	p := filepath.Join(t.TempDir(), "agent.toml")
	os.WriteFile(p, []byte("version = = 1"), 0o644)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("malformed config error does not name the file: %v", err)
	}
}

func FuzzLoadConfig(f *testing.F) {
	data, _ := os.ReadFile("../examples/agent.toml")
	f.Add(string(data))
	f.Add("version = 1\n[runtimes.a]\ntype = 3")
	f.Fuzz(func(t *testing.T, s string) {
		p := filepath.Join(t.TempDir(), "c.toml")
		os.WriteFile(p, []byte(s), 0o644)
		if cfg, err := LoadConfig(p); err == nil {
			_ = cfg.Validate() // must not panic
		}
	})
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{
		"": syscall.SIGKILL, "TERM": syscall.SIGTERM, "SIGTERM": syscall.SIGTERM, "sigint": syscall.SIGINT,
		"hup": syscall.SIGHUP, "9": syscall.SIGKILL, "15": syscall.SIGTERM,
	} {
		got, err := ParseSignal(in)
		if err != nil || got != want {
			t.Errorf("ParseSignal(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"0", "65", "-1", "NOPE", "SIG", "9x"} {
		if _, err := ParseSignal(bad); err == nil {
			t.Errorf("ParseSignal(%q) accepted", bad)
		}
	}
}

func FuzzParseSignal(f *testing.F) {
	for _, s := range []string{"TERM", "9", "sigkill", "", "SIG", "-1", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := ParseSignal(s)
		if err == nil && (sig <= 0 || sig > 64) {
			t.Fatalf("ParseSignal(%q) = %d", s, sig)
		}
	})
}

func TestCheckpointAfterReboot(t *testing.T) {
	cp, err := newCheckpoint(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(cp.dir, "containers", "torn.json"), []byte(`{"schema_ver`), 0o600)
	if _, err := cp.loadContainers(false, nil); err == nil || !strings.Contains(err.Error(), "torn.json") {
		t.Fatalf("a torn file without a reboot: %v", err)
	}
	dropped := ""
	known, err := cp.loadContainers(true, func(p string, _ error) { dropped = p })
	if err != nil || len(known) != 0 || !strings.HasSuffix(dropped, "torn.json") {
		t.Fatalf("after a reboot: %v %v %q", known, err, dropped)
	}
}

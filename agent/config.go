package agent

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/gearboxd/gearbox/internal/leaderconn"
	"github.com/gearboxd/gearbox/internal/units"
)

// ConfigVersion is the only config schema version this agent reads.
const ConfigVersion = 1

// Config is the agent's configuration: one TOML file, flags override it.
type Config struct {
	Version           int    `toml:"version"`
	ContainerdAddress string `toml:"containerd_address"`
	Namespace         string `toml:"namespace"`
	WorkDir           string `toml:"work_dir"`
	RunDir            string `toml:"run_dir"`
	// Listen is the Agent API's address: unix:///path.
	Listen string `toml:"listen"`
	// TCP is an optional second listener for the Agent API.
	TCP TCP `toml:"tcp"`
	// Roles say who may do what.
	Roles Roles `toml:"roles"`
	// Master is the master's address: host:port, or unix:///path for a
	// master on this host without TLS (its --socket); a replicated master's
	// addresses separated by commas (a:5050,b:5050,c:5050): the agent
	// registers with whichever leads. Empty: the agent runs alone, driven
	// through its own API only.
	Master string `toml:"master"`
	// MasterTLS: mutual TLS to the master (the CA that signed its
	// certificate, and this agent's certificate and key).
	MasterTLS MasterTLS `toml:"master_tls"`
	// MaxSessions caps debug sessions open at once (ResourceExhausted beyond).
	MaxSessions int `toml:"max_sessions"`
	// AuditLog records every session (JSON lines); work_dir/audit.log by
	// default.
	AuditLog string `toml:"audit_log"`
	// SocketGroup owns the API socket (mode 0660): its members may use the
	// agent. A group name or gid; root's group when empty.
	SocketGroup string `toml:"socket_group"`
	Snapshotter string `toml:"snapshotter"`
	// LoggerBinary is gearbox-logger; by default the one next to the
	// gearbox binary, else the one on PATH.
	LoggerBinary   string             `toml:"logger_binary"`
	DefaultRuntime string             `toml:"default_runtime"`
	Runtimes       map[string]Runtime `toml:"runtimes"`
	Registries     Registries         `toml:"registries"`
	Logging        Logging            `toml:"logging"`
	// Loggers are custom container loggers a launch may name.
	Loggers map[string]CustomLogger `toml:"loggers"`
	// Recover is Mesos's --recover: reconnect to the containers found at
	// start, or cleanup (kill and remove them all).
	Recover string `toml:"recover"`
	// UnknownContainers is what happens to containers of the namespace the
	// checkpoint does not know: destroy or keep.
	UnknownContainers string `toml:"unknown_containers"`
	// Resources override what the agent detects, in Mesos's form:
	// "cpus:4;mem:8192;disk:100000" (MB). What is not listed is detected,
	// less a share kept for the host.
	Resources ResourceOverrides `toml:"resources"`
	// Attributes describe the machine: "rack:r1;zone:a".
	Attributes Attributes `toml:"attributes"`
	// Isolation names the isolators (Mesos's --isolation): cgroups/cpu,
	// cgroups/mem, cgroups/pids, cgroups/blkio, network/cni.
	Isolation []string `toml:"isolation"`
	// CgroupDriver is cgroupfs (default) or systemd (runc makes a scope per
	// container in gearbox.slice; for hosts where systemd owns the tree).
	CgroupDriver string `toml:"cgroup_driver"`
	// IsolatorPlugins run out of process, after the built-ins.
	IsolatorPlugins []IsolatorPlugin `toml:"isolator_plugins"`
	// CPUHardLimit makes --cpus a CFS quota too (Docker's --cpus); false
	// gives weight only (Mesos's default).
	CPUHardLimit bool `toml:"cpu_hard_limit"`
	// AllowPrivileged lets launches ask for privileged containers.
	AllowPrivileged bool `toml:"allow_privileged"`
	// MetricsListen serves Prometheus metrics on this TCP address (e.g.
	// 127.0.0.1:9464) when set.
	MetricsListen string `toml:"metrics_listen"`
	// MetricsPprof also serves Go's profiles at /debug/pprof/ on
	// metrics_listen (off by default: they show the agent's internals).
	MetricsPprof bool `toml:"metrics_pprof"`
	// ImportMaxSize bounds an imported archive (gearbox image import), as
	// received and once decompressed; its spool lives in work_dir/tmp.
	ImportMaxSize units.Size `toml:"import_max_size"`
	// MaxImports caps the imports under way at once; one more is refused
	// (ResourceExhausted), so at most MaxImports × ImportMaxSize is spooled.
	MaxImports int `toml:"max_imports"`
	// GCDelay is how long the sandbox of an ended container is kept before
	// the agent removes it, and the container's record with it, as rm does
	// (Mesos's --gc_delay; a week by default).
	GCDelay time.Duration `toml:"gc_delay"`
	// GCDiskHeadroom makes sandboxes go sooner as the work dir's disk
	// fills: they are kept gc_delay × max(0, 1 − gc_disk_headroom − disk
	// usage) (Mesos's --gc_disk_headroom, 0.1).
	GCDiskHeadroom float64 `toml:"gc_disk_headroom"`
	// DiskWatchInterval is how often the sandbox and image GCs look at the
	// disks (Mesos's --disk_watch_interval, 1m).
	DiskWatchInterval time.Duration `toml:"disk_watch_interval"`
	// ImageGC removes unused images as the image filesystem fills.
	ImageGC ImageGC `toml:"image_gc"`
	// CNIConfigDir holds the CNI networks containers may join, one
	// .conflist (or .conf) file each (Mesos's --network_cni_config_dir).
	// A bridge network "gearbox" exists unless a file names one so.
	CNIConfigDir string `toml:"cni_config_dir"`
	// CNIBinDir is where the CNI plugins are (Debian's
	// containernetworking-plugins puts them in /usr/lib/cni).
	CNIBinDir string `toml:"cni_bin_dir"`
	// CNISubnet and CNIBridge shape the default network "gearbox".
	CNISubnet string `toml:"cni_subnet"`
	CNIBridge string `toml:"cni_bridge"`
	// DefaultNetwork is the network of a container that names none: host
	// (the default), none, or a CNI network.
	DefaultNetwork string `toml:"default_network"`
	// ContainerDNS is what containers off the host network resolve with
	// (Mesos's --default_container_dns); empty: the host's resolv.conf
	// without loopback servers.
	ContainerDNS ContainerDNS `toml:"container_dns"`
}

// ImageGC is the image garbage collector (kubelet's thresholds): when the
// filesystem holding containerd's content store is used beyond
// HighThreshold percent, images no container uses (in any state) are
// removed, least recently used first, until usage is at most
// LowThreshold percent. Images used within MinAge are kept.
type ImageGC struct {
	HighThreshold float64       `toml:"high_threshold"` // percent; 100 turns the GC off
	LowThreshold  float64       `toml:"low_threshold"`  // percent
	MinAge        time.Duration `toml:"min_age"`
}

// ContainerDNS is a container's resolv.conf.
type ContainerDNS struct {
	Servers []string `toml:"servers"`
	Search  []string `toml:"search"`
	Options []string `toml:"options"`
}

// IsolatorPlugin is an external isolator serving gearbox.isolator.v1 on a
// unix socket.
type IsolatorPlugin struct {
	Name   string `toml:"name"`
	Socket string `toml:"socket"`
	// Required: a failure or timeout fails the step (a launch ends
	// REASON_CONTAINER_LAUNCH_FAILED); otherwise it is logged and skipped.
	Required bool          `toml:"required"`
	Timeout  time.Duration `toml:"timeout"` // "5s"; 0: the default, 5s
}

// TCP is the Agent API on TCP: only with TLS and required client
// certificates, unless Insecure says otherwise explicitly.
type TCP struct {
	Listen   string `toml:"listen"` // host:port; no TCP listener when empty
	Cert     string `toml:"cert"`
	Key      string `toml:"key"`
	ClientCA string `toml:"client_ca"`
	// Insecure serves plaintext with no client authentication: every
	// client then has roles.tcp_default. For tests on loopback.
	Insecure bool `toml:"insecure"`
}

// Roles grant roles (readonly < operator < debug) to identities: uid:N and
// gid:N for unix socket peers (from the kernel; gid:N matches the primary
// group and every supplementary group), cn:NAME for TLS clients. A peer
// named by several rules has the highest of their roles. Root (uid 0) on
// the unix socket always has debug: it owns the agent anyway.
type Roles struct {
	ReadOnly []string `toml:"readonly"`
	Operator []string `toml:"operator"`
	Debug    []string `toml:"debug"`
	// The role of a peer no rule names: readonly by default on the unix
	// socket (its 0660 mode and socket_group say who may connect; a member
	// of that group sees state and logs, as a member of a monitoring group
	// would, and does more only when a rule says so) and on TCP. Set
	// "none" to refuse unnamed peers, or a higher role to trust every
	// member of socket_group (Docker's docker-group model).
	UnixDefault string `toml:"unix_default"`
	TCPDefault  string `toml:"tcp_default"`
}

// Logging sets the default logger and what a launch may ask of it.
type Logging struct {
	// Driver is the default logger: sandbox, logrotate, or a [loggers.NAME].
	Driver string `toml:"driver"`
	// MaxSize and MaxFiles are logrotate's defaults per stream (Mesos's
	// max_stdout_size/max_stderr_size and a count).
	MaxSize  units.Size `toml:"max_size"`
	MaxFiles int        `toml:"max_files"`
	// Mode is the back-pressure policy: block (never lose a line) or drop.
	Mode string `toml:"mode"`
	// Bounds on a launch's own max-size and max-files.
	MaxSizeLimit  units.Size `toml:"max_size_limit"`
	MaxFilesLimit int        `toml:"max_files_limit"`
}

// CustomLogger is an executable speaking containerd's binary logging
// protocol, with fixed key/value arguments.
type CustomLogger struct {
	Path string            `toml:"path"`
	Args map[string]string `toml:"args"`
}

// Built-in logger names.
const (
	LoggerSandbox   = "sandbox"
	LoggerLogrotate = "logrotate"
)

// Runtime is a runtime profile.
type Runtime struct {
	// Type is the containerd shim type (io.containerd.runc.v2, …).
	Type string `toml:"type"`
	// Binary is the OCI runtime binary for the runc shim (runc, crun, a path).
	Binary string `toml:"binary"`
}

// Registries says how to reach image registries.
type Registries struct {
	// Insecure lists registries (host or host:port) spoken to over plain
	// HTTP. Loopback registries always are.
	Insecure []string `toml:"insecure"`
	// Config is a Docker config.json with credentials, used when a pull
	// brings none.
	Config string `toml:"config"`
}

// DefaultConfig is the configuration with nothing set.
func DefaultConfig() Config {
	return Config{
		Version:           ConfigVersion,
		ContainerdAddress: "/run/containerd/containerd.sock",
		Namespace:         "gearbox",
		WorkDir:           "/var/lib/gearbox",
		RunDir:            "/run/gearbox",
		Listen:            "unix:///run/gearbox/agent.sock",
		Snapshotter:       "overlayfs",
		DefaultRuntime:    "runc",
		Recover:           "reconnect",
		Attributes:        Attributes{},
		Roles:             Roles{UnixDefault: "readonly", TCPDefault: "readonly"},
		Isolation:         []string{"cgroups/cpu", "cgroups/mem", "cgroups/pids", "cgroups/blkio", "network/cni"},
		CNIBinDir:         "/usr/lib/cni",
		CNISubnet:         "10.89.0.0/16",
		CNIBridge:         "gearbox0",
		DefaultNetwork:    "host",
		CPUHardLimit:      true,
		CgroupDriver:      "cgroupfs",
		MaxSessions:       64,
		ImportMaxSize:     4 << 30,
		MaxImports:        2,
		UnknownContainers: "destroy",
		GCDelay:           7 * 24 * time.Hour,
		GCDiskHeadroom:    0.1,
		DiskWatchInterval: time.Minute,
		ImageGC:           ImageGC{HighThreshold: 85, LowThreshold: 80, MinAge: 2 * time.Minute},
		Runtimes: map[string]Runtime{
			"runc": {Type: "io.containerd.runc.v2", Binary: "runc"},
		},
		Logging: Logging{
			Driver: LoggerLogrotate, MaxSize: 10 << 20, MaxFiles: 5, Mode: "block",
			MaxSizeLimit: 1 << 30, MaxFilesLimit: 100,
		},
	}
}

// LoadConfig reads a TOML file over the defaults. Unknown keys are errors:
// a misspelt key must not be silently ignored.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	cfg.Runtimes = nil // a file that lists runtimes replaces the default set
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return cfg, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var keys []string
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		return cfg, fmt.Errorf("config %s: unknown key(s) %s", path, strings.Join(keys, ", "))
	}
	if cfg.Runtimes == nil {
		cfg.Runtimes = DefaultConfig().Runtimes
	}
	return cfg, nil
}

// Validate checks the config and names the key at fault.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config key %s: %s", key, fmt.Sprintf(format, a...)))
	}
	if c.Version != ConfigVersion {
		bad("version", "is %d; this agent reads version %d", c.Version, ConfigVersion)
	}
	if c.ContainerdAddress == "" {
		bad("containerd_address", "is empty")
	}
	if c.Namespace == "" || strings.ContainsAny(c.Namespace, "/ ") {
		bad("namespace", "%q is not a containerd namespace name", c.Namespace)
	}
	for key, dir := range map[string]string{"work_dir": c.WorkDir, "run_dir": c.RunDir} {
		if !filepath.IsAbs(dir) {
			bad(key, "%q must be an absolute path", dir)
		}
	}
	if _, err := ParseListen(c.Listen); err != nil {
		bad("listen", "%v", err)
	}
	if c.LoggerBinary != "" && !filepath.IsAbs(c.LoggerBinary) {
		bad("logger_binary", "%q must be an absolute path", c.LoggerBinary)
	}
	c.validateContainers(bad)
	lg := c.Logging
	if _, ok := c.Loggers[lg.Driver]; !ok && lg.Driver != LoggerSandbox && lg.Driver != LoggerLogrotate {
		bad("logging.driver", "%q is neither sandbox, logrotate nor a [loggers.NAME]", lg.Driver)
	}
	if lg.MaxSize < 1024 || lg.MaxSize > lg.MaxSizeLimit {
		bad("logging.max_size", "%s must be at least 1KiB and at most logging.max_size_limit (%s)", lg.MaxSize, lg.MaxSizeLimit)
	}
	if lg.MaxFiles < 1 || lg.MaxFiles > lg.MaxFilesLimit {
		bad("logging.max_files", "%d must be at least 1 and at most logging.max_files_limit (%d)", lg.MaxFiles, lg.MaxFilesLimit)
	}
	if lg.Mode != "block" && lg.Mode != "drop" {
		bad("logging.mode", "%q: use block or drop", lg.Mode)
	}
	for name, l := range c.Loggers {
		if name == LoggerSandbox || name == LoggerLogrotate {
			bad("loggers."+name, "is a built-in logger's name")
		}
		if !filepath.IsAbs(l.Path) {
			bad("loggers."+name+".path", "%q must be an absolute path", l.Path)
		}
	}
	c.validateNetwork(bad)
	c.validateGC(bad)
	if c.MaxSessions < 1 {
		bad("max_sessions", "%d: at least 1", c.MaxSessions)
	}
	if c.ImportMaxSize < 1<<20 {
		bad("import_max_size", "%s: at least 1MiB", c.ImportMaxSize)
	}
	if c.MaxImports < 1 {
		bad("max_imports", "%d: at least 1", c.MaxImports)
	}
	if c.AuditLog != "" && !filepath.IsAbs(c.AuditLog) {
		bad("audit_log", "%q must be an absolute path", c.AuditLog)
	}
	if c.CgroupDriver != "cgroupfs" && c.CgroupDriver != "systemd" {
		bad("cgroup_driver", "%q: use cgroupfs or systemd", c.CgroupDriver)
	}
	seen := map[string]bool{}
	for i, p := range c.IsolatorPlugins {
		key := fmt.Sprintf("isolator_plugins[%d]", i)
		if p.Name == "" || seen[p.Name] {
			bad(key+".name", "%q: each plugin needs a name of its own", p.Name)
		}
		seen[p.Name] = true
		if !filepath.IsAbs(p.Socket) {
			bad(key+".socket", "%q must be an absolute path", p.Socket)
		}
		if p.Timeout < 0 {
			bad(key+".timeout", "%s: write a positive duration such as 5s", p.Timeout)
		}
	}
	if _, err := newAuthorizer(c.Roles); err != nil {
		errs = append(errs, err)
	}
	if c.MetricsListen != "" {
		if _, _, err := net.SplitHostPort(c.MetricsListen); err != nil {
			bad("metrics_listen", "%q is not host:port", c.MetricsListen)
		}
	}
	return errors.Join(errs...)
}

// validateContainers checks the runtimes and what recovery does.
func (c Config) validateContainers(bad func(key, format string, a ...any)) {
	if len(c.Runtimes) == 0 {
		bad("runtimes", "no runtime is configured")
	}
	for name, rt := range c.Runtimes {
		if rt.Type == "" {
			bad("runtimes."+name+".type", "is empty (e.g. io.containerd.runc.v2)")
		}
	}
	if _, _, err := net.ParseCIDR(c.CNISubnet); err != nil {
		bad("cni_subnet", "%q is not a subnet such as 10.89.0.0/16", c.CNISubnet)
	}
	if c.CNIBridge == "" || len(c.CNIBridge) > 15 || strings.ContainsAny(c.CNIBridge, "/ :") {
		bad("cni_bridge", "%q is not an interface name (1-15 characters, no / : or space)", c.CNIBridge)
	}
	if c.DefaultNetwork == "" {
		bad("default_network", "is empty: use host, none or a CNI network's name")
	}
	for _, s := range c.ContainerDNS.Servers {
		if net.ParseIP(s) == nil {
			bad("container_dns.servers", "%q is not an IP address", s)
		}
	}
	if _, ok := c.Runtimes[c.DefaultRuntime]; !ok {
		bad("default_runtime", "%q is not among the configured runtimes", c.DefaultRuntime)
	}
	if c.Recover != "reconnect" && c.Recover != "cleanup" {
		bad("recover", "%q: use reconnect or cleanup", c.Recover)
	}
	if c.UnknownContainers != "destroy" && c.UnknownContainers != "keep" {
		bad("unknown_containers", "%q: use destroy or keep", c.UnknownContainers)
	}
}

// validateGC checks the sandbox and image GCs' keys.
func (c Config) validateGC(bad func(key, format string, a ...any)) {
	if c.GCDelay <= 0 {
		bad("gc_delay", "%s: write a positive duration such as 168h", c.GCDelay)
	}
	if c.GCDiskHeadroom < 0 || c.GCDiskHeadroom > 1 {
		bad("gc_disk_headroom", "%v: a fraction between 0 and 1 (0.1 is 10%%)", c.GCDiskHeadroom)
	}
	if c.DiskWatchInterval <= 0 {
		bad("disk_watch_interval", "%s: write a positive duration such as 1m", c.DiskWatchInterval)
	}
	g := c.ImageGC
	if g.HighThreshold <= 0 || g.HighThreshold > 100 {
		bad("image_gc.high_threshold", "%v: a percentage above 0, at most 100 (100 turns the image GC off)", g.HighThreshold)
	}
	if g.LowThreshold <= 0 || g.LowThreshold > g.HighThreshold {
		bad("image_gc.low_threshold", "%v: a percentage above 0, at most image_gc.high_threshold (%v)", g.LowThreshold, g.HighThreshold)
	}
	if g.MinAge < 0 {
		bad("image_gc.min_age", "%s: must not be negative", g.MinAge)
	}
}

// validateNetwork checks the TCP listener and the connection to the master.
func (c Config) validateNetwork(bad func(key, format string, a ...any)) {
	if t := c.TCP; t.Listen != "" {
		if _, _, err := net.SplitHostPort(t.Listen); err != nil {
			bad("tcp.listen", "%q is not host:port", t.Listen)
		}
		if !t.Insecure && (t.Cert == "" || t.Key == "" || t.ClientCA == "") {
			bad("tcp", "a TCP listener needs cert, key and client_ca (mutual TLS), or insecure = true said explicitly")
		}
	}
	if c.Master != "" {
		if _, err := leaderconn.ParseList(c.Master); err != nil {
			bad("master", "%v", err)
		}
	}
	if mt := c.MasterTLS; mt != (MasterTLS{}) && (mt.CA == "" || mt.Cert == "" || mt.Key == "") {
		bad("master_tls", "give ca, cert and key together, or none")
	}
}

// ParseListen returns the unix socket path of the listen address, the
// Agent API's socket. TCP is a second listener, configured in [tcp].
func ParseListen(addr string) (string, error) {
	u, err := url.Parse(addr)
	if err != nil {
		return "", fmt.Errorf("%q is not an address: %v", addr, err)
	}
	switch u.Scheme {
	case "unix":
		p := u.Path
		if u.Host != "" {
			p = u.Host + u.Path
		}
		if !filepath.IsAbs(p) {
			return "", fmt.Errorf("%q: the socket path must be absolute (unix:///run/gearbox/agent.sock)", addr)
		}
		return p, nil
	case "tcp":
		return "", fmt.Errorf("%q: listen is the unix socket; serve the Agent API on TCP with [tcp] listen (mutual TLS: cert, key, client_ca)", addr)
	}
	return "", fmt.Errorf("%q: use unix:///path/to/agent.sock", addr)
}

// MasterTLS is the agent's side of mutual TLS with its master.
type MasterTLS struct {
	CA   string `toml:"ca"`
	Cert string `toml:"cert"`
	Key  string `toml:"key"`
}

package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/BurntSushi/toml"
	clog "github.com/containerd/log"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/gearboxd/gearbox/agent"
)

func newAgentCmd() *cobra.Command {
	var (
		configPath  string
		printConfig bool
		debug       bool
		flagged     = agent.DefaultConfig()
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent",
		Long: `Run the node agent: it serves the Agent API and runs containers through containerd.

Stopping the agent (SIGTERM, SIGINT) leaves containers running; a new agent recovers them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := agent.DefaultConfig()
			if configPath != "" {
				var err error
				if cfg, err = agent.LoadConfig(configPath); err != nil {
					return err
				}
			}
			applyFlags(cmd.Flags(), &flagged, &cfg, agentFlags)
			if printConfig {
				return toml.NewEncoder(cmd.OutOrStdout()).Encode(cfg)
			}
			quietContainerdClient(debug)
			return runAgent(cmd.Context(), cfg, newLogger(debug))
		},
	}
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML config file (see examples/agent.toml)")
	defineFlags(f, &flagged, agentFlags)
	f.BoolVar(&printConfig, "print-config", false, "print the effective config and exit")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
}

// agentFlags are the agent's config keys that flags override.
var agentFlags = []configFlag[agent.Config]{
	{"containerd-address", "containerd's socket", func(c *agent.Config) any { return &c.ContainerdAddress }},
	{"namespace", "containerd namespace for gearbox's containers", func(c *agent.Config) any { return &c.Namespace }},
	{"work-dir", "work dir: sandboxes and checkpoint", func(c *agent.Config) any { return &c.WorkDir }},
	{"run-dir", "run dir: sockets and temporary files", func(c *agent.Config) any { return &c.RunDir }},
	{"listen", "Agent API address (unix:///path)", func(c *agent.Config) any { return &c.Listen }},
	{"logger-binary", "gearbox-logger (default: next to gearbox, else on PATH)", func(c *agent.Config) any { return &c.LoggerBinary }},
	{"recover", "at start: reconnect to containers, or cleanup (kill and remove them all)", func(c *agent.Config) any { return &c.Recover }},
	{"unknown-containers", "containers the checkpoint does not know: destroy or keep", func(c *agent.Config) any { return &c.UnknownContainers }},
	{"resources", `resources offered, overriding detection: "cpus:4;mem:8192;disk:100000;ports:[31000-32000]" (MB)`, func(c *agent.Config) any { return &c.Resources }},
	{"attributes", `machine attributes: "rack:r1;zone:a"`, func(c *agent.Config) any { return &c.Attributes }},
	{"master", "register with the master at host:port (default: run alone)", func(c *agent.Config) any { return &c.Master }},
	{"max-sessions", "debug sessions open at once (exec, debug); more are refused", func(c *agent.Config) any { return &c.MaxSessions }},
	{"isolation", "isolators, comma-separated (Mesos's --isolation): cgroups/cpu, cgroups/mem, cgroups/pids, cgroups/blkio, network/cni", func(c *agent.Config) any { return &c.Isolation }},
	{"gc-delay", "keep an ended container's sandbox (and record) this long (Mesos's --gc_delay)", func(c *agent.Config) any { return &c.GCDelay }},
	{"gc-disk-headroom", "sandboxes go sooner as the disk fills: kept gc_delay × max(0, 1 − headroom − usage)", func(c *agent.Config) any { return &c.GCDiskHeadroom }},
	{"disk-watch-interval", "how often the sandbox and image GCs look at the disks", func(c *agent.Config) any { return &c.DiskWatchInterval }},
	{"image-gc-high-threshold", "image filesystem usage (%) that starts the image GC; 100: off", func(c *agent.Config) any { return &c.ImageGC.HighThreshold }},
	{"image-gc-low-threshold", "image filesystem usage (%) the image GC frees down to", func(c *agent.Config) any { return &c.ImageGC.LowThreshold }},
	{"image-gc-min-age", "the image GC keeps images used more recently than this", func(c *agent.Config) any { return &c.ImageGC.MinAge }},
	{"default-network", "network of a container that names none: host, none or a CNI network", func(c *agent.Config) any { return &c.DefaultNetwork }},
	{"cni-config-dir", "CNI networks, one .conflist file each (Mesos's --network_cni_config_dir)", func(c *agent.Config) any { return &c.CNIConfigDir }},
	{"cni-bin-dir", "CNI plugins (Debian's containernetworking-plugins: /usr/lib/cni)", func(c *agent.Config) any { return &c.CNIBinDir }},
	{"metrics-listen", "serve Prometheus metrics on this address (host:port)", func(c *agent.Config) any { return &c.MetricsListen }},
	{"metrics-pprof", "also serve Go's profiles at /debug/pprof/ on --metrics-listen", func(c *agent.Config) any { return &c.MetricsPprof }},
}

// newLogger logs text to a terminal and JSON otherwise.
func newLogger(debug bool) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.LevelInfo}
	if debug {
		opts.Level = slog.LevelDebug
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}

// quietContainerdClient keeps the containerd client library's own logging
// (logrus, info level by default) to warnings, in JSON off a terminal, so
// that it does not interleave chatter with the agent's log.
func quietContainerdClient(debug bool) {
	if !debug {
		clog.SetLevel("warn")
	}
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		clog.SetFormat(clog.JSONFormat)
	}
}

func runAgent(ctx context.Context, cfg agent.Config, log *slog.Logger) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := agent.New(cfg, log)
	if err != nil {
		return err
	}
	if err := a.Run(ctx); err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

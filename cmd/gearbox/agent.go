package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
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
		isolation   string
		debug       bool
		flags       agent.Config
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
			// Flags override the file.
			f := cmd.Flags()
			set := func(name string, dst *string, v string) {
				if f.Changed(name) {
					*dst = v
				}
			}
			set("containerd-address", &cfg.ContainerdAddress, flags.ContainerdAddress)
			set("namespace", &cfg.Namespace, flags.Namespace)
			set("work-dir", &cfg.WorkDir, flags.WorkDir)
			set("run-dir", &cfg.RunDir, flags.RunDir)
			set("listen", &cfg.Listen, flags.Listen)
			set("logger-binary", &cfg.LoggerBinary, flags.LoggerBinary)
			set("recover", &cfg.Recover, flags.Recover)
			set("unknown-containers", &cfg.UnknownContainers, flags.UnknownContainers)
			set("resources", &cfg.Resources, flags.Resources)
			set("attributes", &cfg.Attributes, flags.Attributes)
			set("master", &cfg.Master, flags.Master)
			if f.Changed("max-sessions") {
				cfg.MaxSessions = flags.MaxSessions
			}
			if f.Changed("isolation") {
				cfg.Isolation = nil
				for _, n := range strings.Split(isolation, ",") {
					if n = strings.TrimSpace(n); n != "" {
						cfg.Isolation = append(cfg.Isolation, n)
					}
				}
			}
			if printConfig {
				return toml.NewEncoder(cmd.OutOrStdout()).Encode(cfg)
			}
			quietContainerdClient(debug)
			return runAgent(cmd.Context(), cfg, newLogger(debug))
		},
	}
	d := agent.DefaultConfig()
	f := cmd.Flags()
	f.StringVar(&configPath, "config", "", "TOML config file (see examples/agent.toml)")
	f.StringVar(&flags.ContainerdAddress, "containerd-address", d.ContainerdAddress, "containerd's socket")
	f.StringVar(&flags.Namespace, "namespace", d.Namespace, "containerd namespace for gearbox's containers")
	f.StringVar(&flags.WorkDir, "work-dir", d.WorkDir, "work dir: sandboxes and checkpoint")
	f.StringVar(&flags.RunDir, "run-dir", d.RunDir, "run dir: sockets and temporary files")
	f.StringVar(&flags.Listen, "listen", d.Listen, "Agent API address (unix:///path)")
	f.StringVar(&flags.LoggerBinary, "logger-binary", "", "gearbox-logger (default: next to gearbox, else on PATH)")
	f.StringVar(&flags.Recover, "recover", d.Recover, "at start: reconnect to containers, or cleanup (kill and remove them all)")
	f.StringVar(&flags.UnknownContainers, "unknown-containers", d.UnknownContainers, "containers the checkpoint does not know: destroy or keep")
	f.StringVar(&flags.Resources, "resources", "", `resources offered, overriding detection: "cpus:4;mem:8192;disk:100000" (MB)`)
	f.StringVar(&flags.Attributes, "attributes", "", `machine attributes: "rack:r1;zone:a"`)
	f.StringVar(&flags.Master, "master", "", "register with the master at host:port (default: run alone)")
	f.IntVar(&flags.MaxSessions, "max-sessions", d.MaxSessions, "debug sessions open at once (exec, debug); more are refused")
	f.StringVar(&isolation, "isolation", strings.Join(d.Isolation, ","), "isolators, comma-separated (Mesos's --isolation)")
	f.BoolVar(&printConfig, "print-config", false, "print the effective config and exit")
	f.BoolVar(&debug, "debug", false, "log at debug level")
	return cmd
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

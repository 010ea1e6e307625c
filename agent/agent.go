// Package agent is the gearbox node agent: it serves the Agent API over a
// Containerizer. New starts nothing; Run serves until its context ends.
// Stopping the agent never stops a container: they run on under their shims
// and a new agent recovers them.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/grpcserver"
	"github.com/gearboxd/gearbox/internal/peercred"
	"github.com/gearboxd/gearbox/internal/promserve"
	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/filelog"
	"github.com/gearboxd/gearbox/logger/plugin"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Agent is the node agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	cz       containerizer.Containerizer
	adm      *admission
	cp       *checkpoint
	ledger   *ledger
	authz    *authorizer
	sessions sessions
	attrs    map[string]string
	agentID  string
	// masterID is the ID the master assigned (string), once registered.
	masterID  atomic.Value
	mc        *masterClient
	startedAt time.Time
	ready     chan struct{}
	gc        *collector
	*gate
}

// New checks the config; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Agent{cfg: cfg, log: log, ready: make(chan struct{}), gate: newGate(), adm: &admission{}}, nil
}

// id is the agent's ID: the master's once one assigned it.
func (a *Agent) id() string {
	if id, _ := a.masterID.Load().(string); id != "" {
		return id
	}
	return a.agentID
}

// Ready is closed once the API serves.
func (a *Agent) Ready() <-chan struct{} { return a.ready }

// LoggerBinary finds gearbox-logger: the configured path, else next to the
// running binary, else on PATH.
func LoggerBinary(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "gearbox-logger")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	p, err := exec.LookPath("gearbox-logger")
	if err != nil {
		return "", errors.New("gearbox-logger not found next to gearbox nor on PATH: build it (make build) or set logger_binary in the agent's config")
	}
	return filepath.Abs(p)
}

// Run connects to containerd, recovers containers, serves the Agent API and
// returns when ctx ends (nil) or serving fails.
func (a *Agent) Run(ctx context.Context) error {
	a.startedAt = time.Now()
	b, err := a.bootstrap(ctx)
	if err != nil {
		return err
	}
	defer b.close()
	a.gc = newCollector(a.cz, a.cfg, a.log)
	// Health checks run while the agent serves; they stop before the
	// containerizer closes (b.close).
	hctx, stopHealth := context.WithCancel(ctx)
	healthDone := make(chan struct{})
	go func() { defer close(healthDone); a.adm.health.sched.Run(hctx) }()
	defer func() { stopHealth(); <-healthDone }()
	srv := grpcserver.New(grpcserver.Config{
		Services:  []string{agentv1.Agent_ServiceDesc.ServiceName},
		Register:  func(s *grpc.Server) { agentv1.RegisterAgentServer(s, a.apiServer()) },
		Authorize: a.authz.check,
		// Session output and log streams are bulk: fewer, larger writes.
		// Environments are operator-only (auth.go redacts them).
		// Session output goes out uncopied (sessioncodec.go).
		Options: []grpc.ServerOption{grpc.WriteBufferSize(256 << 10), grpc.ReadBufferSize(256 << 10), grpc.ForceServerCodecV2(sessionCodec{}),
			grpc.ChainUnaryInterceptor(a.authz.redactUnary), grpc.ChainStreamInterceptor(a.authz.redactStream)},
		// Stop in stages: refuse new work, cut streams (follows and
		// waits) that would otherwise hold the stop forever, let calls
		// drain.
		Refuse: func() {
			a.stopping.Store(true)
			daemon.SdNotify(false, daemon.SdNotifyStopping)
			a.log.Info("agent stopping; containers keep running")
		},
		EndStreams: a.endStreams,
	})
	srv.Serve(b.ep.unix, grpc.Creds(peercred.Creds{}))
	if b.ep.tcp != nil {
		var opts []grpc.ServerOption
		if b.ep.tcpCreds != nil {
			opts = append(opts, grpc.Creds(b.ep.tcpCreds))
		}
		srv.Serve(b.ep.tcp, opts...)
		a.log.Info("agent serving on TCP", "listen", b.ep.tcp.Addr().String(), "mtls", !a.cfg.TCP.Insecure)
	}
	a.log.Info("agent serving", "listen", a.cfg.Listen, "namespace", a.cfg.Namespace, "containerd", a.cfg.ContainerdAddress)
	close(a.ready)
	// systemd (Type=notify): ready only now, after recovery.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		a.log.Warn("notifying systemd", "err", err)
	}
	stopWatchdog := a.watchdog()
	defer stopWatchdog()
	if a.mc != nil {
		mcCtx, stopMC := context.WithCancel(ctx)
		mcDone := make(chan struct{})
		go func() { defer close(mcDone); a.mc.run(mcCtx) }()
		defer func() { stopMC(); <-mcDone }()
	}
	gcCtx, stopGC := context.WithCancel(ctx)
	gcDone := make(chan struct{})
	go func() { defer close(gcDone); a.gc.run(gcCtx) }()
	defer func() { stopGC(); <-gcDone }()
	select {
	case err = <-srv.Err():
		err = fmt.Errorf("serving the Agent API: %w", err)
	case <-ctx.Done():
	}
	srv.Stop()
	a.sessions.readers.Wait()
	return err
}

// hostMemory is MemTotal from /proc/meminfo, in bytes.
func hostMemory() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// chownGroup gives the API socket to a group (name or gid), so that its
// members may use the agent (the socket is 0660).
func chownGroup(path, group string) error {
	gid, err := strconv.Atoi(group)
	if err != nil {
		g, lerr := user.LookupGroup(group)
		if lerr != nil {
			return fmt.Errorf("config key socket_group: %w", lerr)
		}
		gid, _ = strconv.Atoi(g.Gid)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("giving %s to group %s: %w", path, group, err)
	}
	return nil
}

// watchdog pings systemd at half the unit's WatchdogSec, when it has one.
func (a *Agent) watchdog() func() {
	interval, err := daemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			daemon.SdNotify(false, daemon.SdNotifyWatchdog)
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// loggers builds the container loggers: the two built-ins and the custom
// ones the config names.
func (a *Agent) loggers(loggerBinary string) (map[string]logger.ContainerLogger, error) {
	state := filepath.Join(a.cfg.RunDir, "loggers")
	// The containerizer keeps sandboxes in WorkDir/sandboxes: the loggers
	// open every sandbox beneath that directory (internal/sandboxfs).
	sandboxes := filepath.Join(a.cfg.WorkDir, "sandboxes")
	sb, err := filelog.New(loggerBinary, state, sandboxes, false)
	if err != nil {
		return nil, err
	}
	lr, err := filelog.New(loggerBinary, state, sandboxes, true)
	if err != nil {
		return nil, err
	}
	out := map[string]logger.ContainerLogger{LoggerSandbox: sb, LoggerLogrotate: lr}
	for name, c := range a.cfg.Loggers {
		p, err := plugin.New(name, c.Path, c.Args)
		if err != nil {
			return nil, fmt.Errorf("config key loggers.%s: %w", name, err)
		}
		out[name] = p
	}
	return out, nil
}

// serveMetrics serves Prometheus metrics when the config asks for it.
func (a *Agent) serveMetrics(cs []prometheus.Collector) (func(), error) {
	return promserve.ServeWithPprof(a.cfg.MetricsListen, a.cfg.MetricsPprof, a.log, cs...)
}

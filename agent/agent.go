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
	"net"
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
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/containerizer/containerd"
	"github.com/gearboxd/gearbox/internal/promserve"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/isolators/cgroups"
	isoplugin "github.com/gearboxd/gearbox/isolators/plugin"
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
	sock, _ := ParseListen(a.cfg.Listen)
	for _, d := range []string{a.cfg.WorkDir, a.cfg.RunDir, filepath.Dir(sock)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	lb, err := LoggerBinary(a.cfg.LoggerBinary)
	if err != nil {
		return err
	}
	loggers, err := a.loggers(lb)
	if err != nil {
		return err
	}
	lgc := a.cfg.Logging
	maxSize, _ := units.ParseSize(lgc.MaxSize)
	sizeLimit, _ := units.ParseSize(lgc.MaxSizeLimit)
	cp, err := newCheckpoint(a.cfg.WorkDir)
	if err != nil {
		return err
	}
	meta, found, err := cp.loadMeta()
	if err != nil {
		return err
	}
	boot := bootID()
	rebooted := found && meta.BootID != "" && boot != "" && meta.BootID != boot
	known, err := cp.loadContainers(rebooted, func(path string, err error) {
		a.log.Warn("dropping a checkpoint file the host's crash left unreadable", "path", path, "err", err)
	})
	if err != nil {
		return err
	}
	if !found {
		meta.AgentID = newAgentID()
	}
	a.cp, a.agentID = cp, meta.AgentID
	if rebooted {
		a.log.Warn("the host rebooted since the agent last ran: no container survived", "agent_id", a.agentID)
	}
	a.attrs, _ = ParseAttributes(a.cfg.Attributes)
	if a.cfg.Master != "" {
		if a.mc, err = newMasterClient(a, a.cfg.Master); err != nil {
			return err
		}
		if a.mc.agentID != "" {
			a.masterID.Store(a.mc.agentID)
		}
	}
	recoverStart := time.Now()

	total := detectResources(a.cfg.WorkDir)
	over, set, _ := ParseResources(a.cfg.Resources)
	if set["cpus"] {
		total.CPUs = over.CPUs
	}
	if set["mem"] {
		total.Memory = over.Memory
	}
	if set["disk"] {
		total.Disk = over.Disk
	}
	a.ledger = &ledger{total: total}
	a.adm.ledger = a.ledger
	isos, err := cgroups.New(a.cfg.Isolation, cgroups.Options{CPUHardLimit: a.cfg.CPUHardLimit})
	if err != nil {
		return fmt.Errorf("config key isolation: %w", err)
	}
	for _, pc := range a.cfg.IsolatorPlugins {
		timeout, _ := time.ParseDuration(pc.Timeout)
		p, err := isoplugin.NewClient(isoplugin.Config{Name: pc.Name, Socket: pc.Socket, Required: pc.Required, Timeout: timeout}, a.log)
		if err != nil {
			return err
		}
		defer p.Close()
		if _, err := os.Stat(pc.Socket); err != nil {
			a.log.Warn("isolator plugin is not up; launches fail while a required one is not", "plugin", pc.Name, "socket", pc.Socket, "required", pc.Required)
		}
		isos = append(isos, p)
	}
	runtimes := map[string]containerd.RuntimeProfile{}
	for n, rt := range a.cfg.Runtimes {
		runtimes[n] = containerd.RuntimeProfile{Type: rt.Type, Binary: rt.Binary}
	}
	cz, err := containerd.New(ctx, containerd.Config{
		Address: a.cfg.ContainerdAddress, Namespace: a.cfg.Namespace,
		WorkDir: a.cfg.WorkDir, RunDir: a.cfg.RunDir, Snapshotter: a.cfg.Snapshotter,
		Runtimes: runtimes, DefaultRuntime: a.cfg.DefaultRuntime,
		InsecureRegistries: a.cfg.Registries.Insecure, RegistryConfig: a.cfg.Registries.Config,
		Loggers:         loggers,
		LogDefaults:     containerizer.LogConfig{Driver: lgc.Driver, MaxSize: maxSize, MaxFiles: lgc.MaxFiles, Mode: lgc.Mode},
		LogLimits:       containerizer.LogConfig{MaxSize: sizeLimit, MaxFiles: lgc.MaxFilesLimit},
		AllowPrivileged: a.cfg.AllowPrivileged,
		Isolators:       isos,
		SystemdCgroup:   a.cfg.CgroupDriver == "systemd",
		HostMemory:      hostMemory(),
		Recovery: containerd.Recovery{
			Known: known, KeepUnknown: a.cfg.UnknownContainers == "keep",
			Rebooted: rebooted, Cleanup: a.cfg.Recover == "cleanup",
		},
		OnChange: func(c containerizer.Container, removed bool) {
			if err := cp.update(c, removed); err != nil {
				a.log.Error("checkpointing a container", "container_id", c.ID, "err", err)
			}
			if a.mc != nil {
				a.mc.observe(c, removed)
			}
		},
		Log: a.log,
	})
	if err != nil {
		return err
	}
	defer cz.Close()
	a.cz, a.adm.cz = cz, cz
	meta.BootID = boot
	if err := cp.saveMeta(meta); err != nil {
		return fmt.Errorf("writing the checkpoint: %w", err)
	}
	all, _ := cz.Containers(ctx)
	recoverySeconds := time.Since(recoverStart).Seconds()
	a.log.Info("recovery done", "agent_id", a.id(), "containers", len(all), "duration", time.Since(recoverStart).Round(time.Millisecond))

	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale socket %s: %w", sock, err)
	}
	lis, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", sock, err)
	}
	if err := os.Chmod(sock, 0o660); err != nil {
		lis.Close()
		return fmt.Errorf("setting the mode of %s: %w", sock, err)
	}

	authz, err := newAuthorizer(a.cfg.Roles)
	if err != nil {
		lis.Close()
		return err
	}
	a.authz = authz
	a.sessions.max = int64(a.cfg.MaxSessions)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(agentv1.Agent_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	newServer := func(creds credentials.TransportCredentials) *grpc.Server {
		opts := []grpc.ServerOption{grpc.ChainUnaryInterceptor(authz.unary), grpc.ChainStreamInterceptor(authz.stream),
			// Session output and log streams are bulk: fewer, larger writes.
			grpc.WriteBufferSize(256 << 10), grpc.ReadBufferSize(256 << 10)}
		if creds != nil {
			opts = append(opts, grpc.Creds(creds))
		}
		s := grpc.NewServer(opts...)
		agentv1.RegisterAgentServer(s, a.apiServer())
		healthpb.RegisterHealthServer(s, hs)
		reflection.Register(s)
		return s
	}
	gs := newServer(peerCreds{})
	var tcpServer *grpc.Server
	if a.cfg.TCP.Listen != "" {
		creds, err := tcpCreds(a.cfg.TCP)
		if err != nil {
			lis.Close()
			return err
		}
		tl, err := net.Listen("tcp", a.cfg.TCP.Listen)
		if err != nil {
			lis.Close()
			return fmt.Errorf("listening on %s: %w", a.cfg.TCP.Listen, err)
		}
		tcpServer = newServer(creds)
		go tcpServer.Serve(tl)
		a.log.Info("agent serving on TCP", "listen", tl.Addr().String(), "mtls", !a.cfg.TCP.Insecure)
	}

	if a.cfg.SocketGroup != "" {
		if err := chownGroup(sock, a.cfg.SocketGroup); err != nil {
			lis.Close()
			return err
		}
	}
	recovery := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gearbox_agent_recovery_duration_seconds", Help: "How long the last start's recovery took."})
	recovery.Set(recoverySeconds)
	stopMetrics, err := a.serveMetrics(append(cz.Collectors(), recovery))
	if err != nil {
		lis.Close()
		return err
	}
	defer stopMetrics()

	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
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

	select {
	case err := <-errc:
		return fmt.Errorf("serving the Agent API: %w", err)
	case <-ctx.Done():
	}
	// Stop in stages: refuse new work, let calls drain, then cut streams
	// (follows and waits) that would otherwise hold the stop forever.
	a.stopping.Store(true)
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	a.endStreams()
	hs.Shutdown()
	a.log.Info("agent stopping; containers keep running")
	servers := []*grpc.Server{gs}
	if tcpServer != nil {
		servers = append(servers, tcpServer)
	}
	for _, s := range servers {
		done := make(chan struct{})
		go func() { s.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			s.Stop()
			<-done
		}
	}
	<-errc
	return nil
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
	sb, err := filelog.New(loggerBinary, state, false)
	if err != nil {
		return nil, err
	}
	lr, err := filelog.New(loggerBinary, state, true)
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
	return promserve.Serve(a.cfg.MetricsListen, a.log, cs...)
}

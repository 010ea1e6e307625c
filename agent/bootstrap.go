package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/credentials"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/containerizer/containerd"
	"github.com/gearboxd/gearbox/isolators"
	"github.com/gearboxd/gearbox/isolators/cgroups"
	"github.com/gearboxd/gearbox/isolators/cni"
	isoplugin "github.com/gearboxd/gearbox/isolators/plugin"
	"github.com/gearboxd/gearbox/logger"
)

// Start-up, in steps (as etcd's server/etcdserver/bootstrap.go): each step
// builds one thing and registers how to release it; bootstrap runs them in
// order and, when one fails, releases what the steps before it built, once.
// Nothing serves until every step has succeeded, so a start-up that fails
// leaves no listener, server or goroutine behind.
//
//	directories → loggers → checkpoint → resources → master client →
//	isolators → containerizer (recovers the containers) → authorizer →
//	endpoints (API socket, TCP, socket group, metrics)

// bootstrapped is what start-up built, for Run to serve with.
type bootstrapped struct {
	ep *endpoints
	// metrics are the containerizer's collectors.
	metrics []prometheus.Collector
	closers []func()
}

// onClose registers a release; close runs them in reverse order.
func (b *bootstrapped) onClose(f func()) { b.closers = append(b.closers, f) }

func (b *bootstrapped) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// recovered is what the checkpoint says about the agent's last run.
type recovered struct {
	meta     agentMeta
	known    map[containerizer.ContainerID]containerizer.Container
	boot     string
	rebooted bool
}

// bootstrap builds everything the agent serves with; it serves nothing.
func (a *Agent) bootstrap(ctx context.Context) (_ *bootstrapped, err error) {
	b := &bootstrapped{}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	sock, _ := ParseListen(a.cfg.Listen)
	// The work dir is root's alone (the containerizer also tightens one an
	// older agent made 0711); the run dir and the socket's stay traversable
	// for the socket's group.
	if err := os.MkdirAll(a.cfg.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", a.cfg.WorkDir, err)
	}
	for _, d := range []string{a.cfg.RunDir, filepath.Dir(sock)} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("creating %s: %w", d, err)
		}
	}
	lb, err := LoggerBinary(a.cfg.LoggerBinary)
	if err != nil {
		return nil, err
	}
	loggers, err := a.loggers(lb)
	if err != nil {
		return nil, err
	}
	rec, err := a.openCheckpoint()
	if err != nil {
		return nil, err
	}
	// The master client registers with the agent's resources and
	// attributes: they come first.
	a.ledger, a.attrs = a.resources()
	a.adm.ledger = a.ledger
	if a.cfg.Master != "" {
		a.mc, err = newMasterClient(a.cfg.Master, masterDeps{log: a.log, cp: a.cp, adm: a.adm, gate: a.gate,
			node: nodeInfo{Address: a.cfg.TCP.Listen, Attributes: a.attrs}, tls: a.cfg.MasterTLS,
			onID: func(id string) { a.masterID.Store(id) }})
		if err != nil {
			return nil, err
		}
		if a.mc.agentID != "" {
			a.masterID.Store(a.mc.agentID)
		}
	}
	if a.adm.health, err = newHealth(a.cfg.WorkDir, a.log); err != nil {
		return nil, err
	}
	if a.mc != nil {
		a.adm.health.onChange = a.mc.healthChanged
	}
	recoverStart := time.Now()
	isos, err := a.isolators(b)
	if err != nil {
		return nil, err
	}
	if err := a.openContainerizer(ctx, b, rec, loggers, isos); err != nil {
		return nil, err
	}
	rec.meta.BootID = rec.boot
	if err := a.cp.saveMeta(rec.meta); err != nil {
		return nil, fmt.Errorf("writing the checkpoint: %w", err)
	}
	all, _ := a.cz.Containers(ctx)
	a.adm.health.cz, a.adm.health.sx = a.cz, a.cz
	a.adm.health.recover(all)
	b.metrics = append(b.metrics, a.adm.health.sched.Collectors()...)
	recovery := prometheus.NewGauge(prometheus.GaugeOpts{Name: "gearbox_agent_recovery_duration_seconds", Help: "How long the last start's recovery took."})
	recovery.Set(time.Since(recoverStart).Seconds())
	a.log.Info("recovery done", "agent_id", a.id(), "containers", len(all), "duration", time.Since(recoverStart).Round(time.Millisecond))

	if a.authz, err = newAuthorizer(a.cfg.Roles); err != nil {
		return nil, err
	}
	a.sessions.max = int64(a.cfg.MaxSessions)
	a.sessions.bulk.log = a.log
	if b.ep, err = a.openEndpoints(append(b.metrics, recovery)); err != nil {
		return nil, err
	}
	b.onClose(b.ep.close)
	return b, nil
}

// openCheckpoint reads the agent's ID and its containers' last known
// states; a new agent gets a new ID.
func (a *Agent) openCheckpoint() (recovered, error) {
	cp, err := newCheckpoint(a.cfg.WorkDir)
	if err != nil {
		return recovered{}, err
	}
	meta, found, err := cp.loadMeta()
	if err != nil {
		return recovered{}, err
	}
	boot := bootID()
	rebooted := found && meta.BootID != "" && boot != "" && meta.BootID != boot
	known, err := cp.loadContainers(rebooted, func(path string, err error) {
		a.log.Warn("dropping a checkpoint file the host's crash left unreadable", "path", path, "err", err)
	})
	if err != nil {
		return recovered{}, err
	}
	if !found {
		meta.AgentID = newAgentID()
	}
	a.cp, a.agentID = cp, meta.AgentID
	if rebooted {
		a.log.Warn("the host rebooted since the agent last ran: no container survived", "agent_id", a.agentID)
	}
	return recovered{meta: meta, known: known, boot: boot, rebooted: rebooted}, nil
}

// resources are the resources the agent offers (detected, then the
// config's overrides) and its attributes.
func (a *Agent) resources() (*ledger, map[string]string) {
	total := a.cfg.Resources.Over(detectResources(a.cfg.WorkDir))
	attrs := map[string]string(a.cfg.Attributes)
	if attrs == nil {
		attrs = map[string]string{}
	}
	return &ledger{total: total}, attrs
}

// isolators are the built-in cgroup isolators and the configured plugins'
// clients.
func (a *Agent) isolators(b *bootstrapped) ([]isolators.Isolator, error) {
	var names []string
	var network *cni.Isolator
	for _, n := range a.cfg.Isolation {
		if n != cni.Name {
			names = append(names, n)
			continue
		}
		var err error
		if network, err = a.networkIsolator(); err != nil {
			return nil, err
		}
	}
	isos, err := cgroups.New(names, cgroups.Options{CPUHardLimit: a.cfg.CPUHardLimit})
	if err != nil {
		return nil, fmt.Errorf("config key isolation: %w", err)
	}
	a.adm.defaultNetwork = a.cfg.DefaultNetwork
	if network != nil {
		isos = append(isos, network)
	}
	if dn := a.cfg.DefaultNetwork; dn != isolators.NetworkHost {
		if network == nil {
			return nil, fmt.Errorf("config key default_network: %q needs the %s isolator (config key isolation)", dn, cni.Name)
		}
		if err := network.Check(isolators.Network{Name: dn}); err != nil {
			return nil, fmt.Errorf("config key default_network: %w", err)
		}
	}
	for _, pc := range a.cfg.IsolatorPlugins {
		p, err := isoplugin.NewClient(isoplugin.Config{Name: pc.Name, Socket: pc.Socket, Required: pc.Required, Timeout: pc.Timeout}, a.log)
		if err != nil {
			return nil, err
		}
		b.onClose(func() { p.Close() })
		if _, err := os.Stat(pc.Socket); err != nil {
			a.log.Warn("isolator plugin is not up; launches fail while a required one is not", "plugin", pc.Name, "socket", pc.Socket, "required", pc.Required)
		}
		isos = append(isos, p)
	}
	return isos, nil
}

// networkIsolator is the network/cni isolator: its state (namespaces,
// the files containers see, the default network's IPAM store) lives in the
// run dir, which a reboot clears along with the namespaces.
func (a *Agent) networkIsolator() (*cni.Isolator, error) {
	iso, err := cni.New(cni.Config{
		ConfDir: a.cfg.CNIConfigDir, BinDirs: []string{a.cfg.CNIBinDir},
		StateDir: filepath.Join(a.cfg.RunDir, "cni"), Subnet: a.cfg.CNISubnet, Bridge: a.cfg.CNIBridge,
		DNS: cni.DNS{Servers: a.cfg.ContainerDNS.Servers, Search: a.cfg.ContainerDNS.Search, Options: a.cfg.ContainerDNS.Options},
		Log: a.log,
	})
	if err != nil {
		return nil, fmt.Errorf("the %s isolator: %w", cni.Name, err)
	}
	return iso, nil
}

// openContainerizer connects to containerd and recovers the containers.
func (a *Agent) openContainerizer(ctx context.Context, b *bootstrapped, rec recovered, loggers map[string]logger.ContainerLogger, isos []isolators.Isolator) error {
	lgc := a.cfg.Logging
	runtimes := map[string]containerd.RuntimeProfile{}
	for n, rt := range a.cfg.Runtimes {
		runtimes[n] = containerd.RuntimeProfile{Type: rt.Type, Binary: rt.Binary}
	}
	cp, health := a.cp, a.adm.health
	cz, err := containerd.New(ctx, containerd.Config{
		Address: a.cfg.ContainerdAddress, Namespace: a.cfg.Namespace,
		WorkDir: a.cfg.WorkDir, RunDir: a.cfg.RunDir, Snapshotter: a.cfg.Snapshotter,
		Runtimes: runtimes, DefaultRuntime: a.cfg.DefaultRuntime,
		InsecureRegistries: a.cfg.Registries.Insecure, RegistryConfig: a.cfg.Registries.Config,
		ImportMaxSize: int64(a.cfg.ImportMaxSize), MaxImports: a.cfg.MaxImports,
		Loggers:         loggers,
		LogDefaults:     containerizer.LogConfig{Driver: lgc.Driver, MaxSize: int64(lgc.MaxSize), MaxFiles: lgc.MaxFiles, Mode: lgc.Mode},
		LogLimits:       containerizer.LogConfig{MaxSize: int64(lgc.MaxSizeLimit), MaxFiles: lgc.MaxFilesLimit},
		AllowPrivileged: a.cfg.AllowPrivileged,
		Isolators:       isos,
		SystemdCgroup:   a.cfg.CgroupDriver == "systemd",
		HostMemory:      hostMemory(),
		Recovery: containerd.Recovery{
			Known: rec.known, KeepUnknown: a.cfg.UnknownContainers == "keep",
			Rebooted: rec.rebooted, Cleanup: a.cfg.Recover == "cleanup",
		},
		OnChange: func(c containerizer.Container, removed bool) {
			if err := cp.update(c, removed); err != nil {
				a.log.Error("checkpointing a container", "container_id", c.ID, "err", err)
			}
			if a.mc != nil {
				a.mc.observe(c, removed)
			}
			health.observe(c, removed)
		},
		Log: a.log,
	})
	if err != nil {
		return err
	}
	b.onClose(func() { cz.Close() })
	a.cz, a.adm.cz, b.metrics = cz, cz, cz.Collectors()
	return nil
}

// endpoints are the agent's listeners: opened during start-up, served only
// once start-up is done.
type endpoints struct {
	unix        net.Listener
	tcp         net.Listener // nil without tcp.listen
	tcpCreds    credentials.TransportCredentials
	stopMetrics func()
}

func (e *endpoints) close() {
	e.stopMetrics()
	if e.tcp != nil {
		e.tcp.Close()
	}
	if e.unix != nil {
		e.unix.Close()
		if sl, ok := e.unix.(*splitListener); ok {
			sl.wait()
		}
	}
}

// openEndpoints opens the API socket (mode 0660, given to socket_group),
// the TCP listener and the metrics server. If one fails, those it opened
// are closed again.
func (a *Agent) openEndpoints(metrics []prometheus.Collector) (_ *endpoints, err error) {
	e := &endpoints{stopMetrics: func() {}}
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	sock, _ := ParseListen(a.cfg.Listen)
	if err := os.Remove(sock); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale socket %s: %w", sock, err)
	}
	if e.unix, err = net.Listen("unix", sock); err != nil {
		return nil, fmt.Errorf("listening on %s: %w", sock, err)
	}
	e.unix = newSplitListener(e.unix, &a.sessions.bulk)
	if err := os.Chmod(sock, 0o660); err != nil {
		return nil, fmt.Errorf("setting the mode of %s: %w", sock, err)
	}
	if a.cfg.TCP.Listen != "" {
		if e.tcpCreds, err = tcpCreds(a.cfg.TCP); err != nil {
			return nil, err
		}
		if e.tcp, err = net.Listen("tcp", a.cfg.TCP.Listen); err != nil {
			return nil, fmt.Errorf("listening on %s: %w", a.cfg.TCP.Listen, err)
		}
	}
	if a.cfg.SocketGroup != "" {
		if err := chownGroup(sock, a.cfg.SocketGroup); err != nil {
			return nil, err
		}
	}
	stop, err := a.serveMetrics(metrics)
	if err != nil {
		return nil, err
	}
	e.stopMetrics = stop
	return e, nil
}

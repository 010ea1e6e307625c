// Package master is gearbox's compact master: agents register with it and
// keep a stream open (heartbeats, status updates; launches and kills come
// back), it keeps the cluster's state in a registry (master/store), judges
// agents' health and partitions, places tasks, and serves operators: state,
// tasks and an event stream. New starts nothing; Run serves until its
// context ends.
//
// One mutex (Master.mu) guards the in-memory registry; every change is made
// under it, in the order events are numbered. Writes to the store are group
// commits (persister): a change is durable once the batch that carries it
// is, and only then is it acknowledged to whoever asked for it. Heartbeats
// touch no lock and no disk.
package master

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/grpcserver"
	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/peercred"
	"github.com/gearboxd/gearbox/internal/promserve"
	"github.com/gearboxd/gearbox/internal/tlsutil"
	"github.com/gearboxd/gearbox/internal/units"
	"github.com/gearboxd/gearbox/internal/version"
	"github.com/gearboxd/gearbox/master/allocator"
	"github.com/gearboxd/gearbox/master/allocator/hierarchical"
	"github.com/gearboxd/gearbox/master/store"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	schedulerv1 "github.com/gearboxd/gearbox/proto/gearbox/scheduler/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Config is the master's configuration. Names follow Mesos's master flags;
// in the TOML file (LoadConfig) each key is its flag's name with
// underscores, and flags override the file.
type Config struct {
	Listen  string `toml:"listen"`   // host:port for agents and operators
	WorkDir string `toml:"work_dir"` // holds registry.db
	// An agent is missed after AgentPingTimeout × MaxAgentPingTimeouts
	// without a heartbeat; agents heartbeat every AgentPingTimeout.
	AgentPingTimeout     time.Duration `toml:"agent_ping_timeout"`
	MaxAgentPingTimeouts int           `toml:"max_agent_ping_timeouts"`
	// AgentRemovalRateLimit ("1/10mins"; "" for none) bounds how fast
	// missed agents are marked unreachable.
	AgentRemovalRateLimit string `toml:"agent_removal_rate_limit"`
	// RegistryMaxAgentAge: an agent unreachable longer than this is gone
	// and its tasks TASK_GONE.
	RegistryMaxAgentAge time.Duration `toml:"registry_max_agent_age"`
	// EventBuffer is how many events are kept for subscribers to resume
	// from; SubscriberLag is how far behind a subscriber may fall before it
	// is cut off (at most EventBuffer).
	EventBuffer   int `toml:"event_buffer"`
	SubscriberLag int `toml:"subscriber_lag"`
	// SubscriberHeartbeat: a HEARTBEAT event when nothing else was sent
	// for this long.
	SubscriberHeartbeat time.Duration `toml:"subscriber_heartbeat"`
	// SubscriberBatchWindow: once an event is there, wait this long for
	// more before sending, so that sends carry batches (0: send at once).
	SubscriberBatchWindow time.Duration `toml:"subscriber_batch_window"`
	MetricsListen         string        `toml:"metrics_listen"`
	// MetricsPprof also serves Go's profiles at /debug/pprof/ on
	// metrics_listen (off by default).
	MetricsPprof bool `toml:"metrics_pprof"`
	// TLS: the master's certificate and key, and the CA that signs its
	// clients' (agents and operators): mutual TLS. Without them the master
	// serves plaintext, which it refuses on an address other hosts reach
	// unless Insecure says so.
	TLSCert     string `toml:"tls_cert"`
	TLSKey      string `toml:"tls_key"`
	TLSClientCA string `toml:"tls_client_ca"`
	// Insecure lets plaintext TCP clients do everything: anyone who
	// reaches Listen, every container on this host included (they share
	// its network). Without it plaintext TCP serves health only, and
	// local clients use Socket.
	Insecure bool `toml:"insecure"`
	// Socket is a unix socket (mode 0600) on which root and the master's
	// own user may do everything, by the kernel's word (master/auth.go);
	// "" for none.
	Socket string `toml:"socket"`
	// Who may do what, by certificate common name (master/auth.go); none
	// given: every certificate the CA signed may do everything.
	AgentCNs    []string `toml:"agent_cn"`
	ReadOnlyCNs []string `toml:"readonly_cn"`
	OperatorCNs []string `toml:"operator_cn"`
	// AgentIdentities pin agent IDs to certificate names, "ID=CN": only CN
	// may register as ID, CN may register only as its pinned IDs, and a
	// registration of CN without an ID gets one of them.
	AgentIdentities []string `toml:"agent_identity"`
	// MaxAgentsPerIdentity bounds the agents (active or unreachable) one
	// certificate name may hold in the registry; a registration that would
	// add one more is refused. Names with pinned IDs hold those instead.
	MaxAgentsPerIdentity int `toml:"max_agents_per_identity"`
	// Bounds on what an agent may report (InvalidArgument beyond, naming
	// the flag): tasks at registration and adopted in the registry, and
	// resources. A fake agent reporting huge resources would otherwise win
	// every placement.
	MaxAgentTasks  int        `toml:"max_agent_tasks"`
	MaxAgentCPUs   float64    `toml:"max_agent_cpus"`
	MaxAgentMemory units.Size `toml:"max_agent_memory"`
	MaxAgentDisk   units.Size `toml:"max_agent_disk"`
	// Frameworks (the scheduler API, frameworks.go). AllocationInterval:
	// offers are made after each change and at least this often (Mesos's
	// 1 s). OfferTimeout: an offer not used this long is rescinded (0:
	// never). FrameworkHeartbeat: a HEARTBEAT event when nothing else was
	// sent this long. StatusUpdateRetry: a status update not acknowledged
	// this long is sent again.
	AllocationInterval time.Duration `toml:"allocation_interval"`
	OfferTimeout       time.Duration `toml:"offer_timeout"`
	FrameworkHeartbeat time.Duration `toml:"framework_heartbeat"`
	StatusUpdateRetry  time.Duration `toml:"status_update_retry"`
	// Frameworks is who may register frameworks in which roles, by
	// certificate name (Mesos's register_frameworks ACL); none given:
	// every certificate the CA signed may, in any role. The unix socket's
	// root (and the master's own user) may register any role.
	Frameworks []FrameworkACL `toml:"frameworks"`
	// High availability (ha.go): with EtcdEndpoints the registry is kept
	// in etcd and the masters that share it elect one leader; the others
	// stand by. EtcdCA/EtcdCert/EtcdKey: TLS to etcd. EtcdPrefix: the keys'
	// prefix. ElectionTTL: the lease of a master's election key, so how
	// long a dead leader leads. Advertise: the address others reach this
	// master at (default: Listen).
	EtcdEndpoints []string      `toml:"etcd_endpoints"`
	EtcdCA        string        `toml:"etcd_ca"`
	EtcdCert      string        `toml:"etcd_cert"`
	EtcdKey       string        `toml:"etcd_key"`
	EtcdPrefix    string        `toml:"etcd_prefix"`
	ElectionTTL   time.Duration `toml:"election_ttl"`
	Advertise     string        `toml:"advertise"`
}

// DefaultSocket is the master's unix socket, where the CLI looks first.
const DefaultSocket = "/run/gearbox-master.sock"

// DefaultConfig is Mesos's defaults where Mesos has one.
func DefaultConfig() Config {
	return Config{
		Listen:                "127.0.0.1:5050",
		Socket:                DefaultSocket,
		WorkDir:               "/var/lib/gearbox-master",
		AgentPingTimeout:      5 * time.Second,
		MaxAgentPingTimeouts:  3,
		RegistryMaxAgentAge:   14 * 24 * time.Hour,
		EventBuffer:           10000,
		SubscriberLag:         5000,
		SubscriberHeartbeat:   15 * time.Second,
		SubscriberBatchWindow: 10 * time.Millisecond,
		MaxAgentsPerIdentity:  1,
		MaxAgentTasks:         10000,
		MaxAgentCPUs:          4096,
		MaxAgentMemory:        256 << 40, // 256 TiB
		MaxAgentDisk:          1 << 60,   // 1 EiB
		AllocationInterval:    time.Second,
		FrameworkHeartbeat:    15 * time.Second,
		StatusUpdateRetry:     10 * time.Second,
		EtcdPrefix:            "/gearbox/",
		ElectionTTL:           5 * time.Second,
	}
}

// Validate says what is wrong with a config, naming the flag.
func (c Config) Validate() error {
	if err := c.validateBounds(); err != nil {
		return err
	}
	for i, acl := range c.Frameworks {
		if strings.TrimSpace(acl.Principal) == "" || len(acl.Roles) == 0 {
			return fmt.Errorf("frameworks[%d]: give a principal (a certificate name) and its roles", i)
		}
		for _, r := range acl.Roles {
			if err := checkRole(r); err != nil {
				return fmt.Errorf("frameworks[%d].roles: %s", i, status.Convert(err).Message())
			}
		}
	}
	if _, err := parsePins(c.AgentIdentities); err != nil {
		return err
	}
	tls := setting("tls-cert", "tls-key", "tls-client-ca")
	if len(c.AgentIdentities) > 0 && c.TLSCert == "" {
		return fmt.Errorf("%s pins agent IDs to certificate names: give %s too", setting("agent-identity"), tls)
	}
	if _, err := ParseRate(c.AgentRemovalRateLimit); err != nil {
		return fmt.Errorf("%s: %w", setting("agent-removal-rate-limit"), err)
	}
	if _, err := newAuthorizer(c); err != nil {
		return err
	}
	if err := c.validateHA(); err != nil {
		return err
	}
	n := 0
	for _, f := range []string{c.TLSCert, c.TLSKey, c.TLSClientCA} {
		if f != "" {
			n++
		}
	}
	switch {
	case n != 0 && n != 3:
		return fmt.Errorf("%s go together: give all three for mutual TLS, or none", tls)
	case n == 0 && !c.Insecure && c.Socket == "":
		return fmt.Errorf("without TLS and without a socket nothing could use the master: give %s (local clients), %s, or %s",
			setting("socket"), tls, setting("insecure"))
	case n == 0 && !c.Insecure && !loopback(c.Listen):
		return fmt.Errorf("%s %s is reachable from other hosts: give %s, "+
			"or %s to serve it without TLS (then anyone who reaches it can launch tasks and mark agents gone)", setting("listen"), c.Listen, tls, setting("insecure"))
	}
	return nil
}

// validateBounds checks the settings that are single values in a range.
func (c Config) validateBounds() error {
	var bad string
	switch {
	case c.Listen == "":
		bad = setting("listen") + ": give host:port"
	case c.WorkDir == "":
		bad = setting("work-dir") + ": give a directory"
	case c.Socket != "" && !filepath.IsAbs(c.Socket):
		bad = fmt.Sprintf("%s %q: give an absolute path", setting("socket"), c.Socket)
	case c.AgentPingTimeout <= 0:
		bad = setting("agent-ping-timeout") + " must be positive"
	case c.MaxAgentPingTimeouts < 1:
		bad = setting("max-agent-ping-timeouts") + " must be at least 1"
	case c.RegistryMaxAgentAge <= 0:
		bad = setting("registry-max-agent-age") + " must be positive"
	case c.EventBuffer < 1:
		bad = setting("event-buffer") + " must be at least 1"
	case c.SubscriberLag < 1 || c.SubscriberLag > c.EventBuffer:
		bad = fmt.Sprintf("%s must be between 1 and %s (%d)", setting("subscriber-lag"), setting("event-buffer"), c.EventBuffer)
	case c.SubscriberHeartbeat <= 0:
		bad = setting("subscriber-heartbeat") + " must be positive"
	case c.SubscriberBatchWindow < 0 || c.SubscriberBatchWindow > time.Second:
		bad = setting("subscriber-batch-window") + " must be between 0 and 1s"
	case c.MaxAgentsPerIdentity < 1:
		bad = setting("max-agents-per-identity") + " must be at least 1"
	case c.MaxAgentTasks < 1:
		bad = setting("max-agent-tasks") + " must be at least 1"
	case !(c.MaxAgentCPUs > 0) || math.IsInf(c.MaxAgentCPUs, 0):
		bad = setting("max-agent-cpus") + " must be a positive number"
	case c.MaxAgentMemory <= 0 || c.MaxAgentDisk <= 0:
		bad = setting("max-agent-memory", "max-agent-disk") + " must be positive"
	case c.AllocationInterval <= 0 || c.FrameworkHeartbeat <= 0 || c.StatusUpdateRetry <= 0:
		bad = setting("allocation-interval", "framework-heartbeat", "status-update-retry") + " must be positive"
	case c.OfferTimeout < 0:
		bad = setting("offer-timeout") + " must not be negative (0: offers never expire)"
	default:
		return nil
	}
	return errors.New(bad)
}

// stoppingErr tells an agent the master stops (ErrorInfo
// MASTER_STOPPING): a planned absence, not a fault.
func stoppingErr() error {
	st := status.New(codes.Unavailable, "the master is stopping: register again")
	return typesv1.WithErrorReason(st, typesv1.ErrorReasonMasterStopping).Err()
}

// loopback says whether a listen address is reachable from this host only.
func loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Master is the compact master.
type Master struct {
	cfg       Config
	log       *slog.Logger
	st        store.Store
	startedAt time.Time
	ready     chan struct{}
	addr      atomic.Value // string: the address it listens on

	mu     sync.Mutex
	agents map[string]*agentEntry
	tasks  map[string]*store.Task
	// byAgent indexes tasks by agent.
	byAgent map[string]map[string]struct{}
	ev      *eventLog
	p       *persister

	// pins: agent ID → certificate name, and name → its IDs in order.
	pins     map[string]string
	pinnedTo map[string][]string

	// Frameworks and offers (frameworks.go, offers.go).
	frameworks    map[string]*frameworkEntry
	byFramework   map[string]map[string]struct{}
	offers        map[string]*offer
	offersByAgent map[string]map[string]*offer
	weights       map[string]float64
	allocWake     chan struct{}
	alloc         allocator.Allocator
	allocAgents   map[string]bool // agents added to alloc
	allocRuns     allocator.RunHistogram

	// ha: the election this master runs under (ha.go); nil for a single
	// master.
	ha *ha

	removal     *removalQueue
	limiter     *rate.Limiter
	subscribers sync.Map // *subscriber → struct{}
	// streamLoops are the streams' send and receive loops (agents'
	// Connect, frameworks' Subscribe, events' Subscribe): gRPC releases a
	// blocked Send or Recv only once the call has returned, so they are
	// the master's, and Run waits for them.
	streamLoops sync.WaitGroup

	queueGauge   prometheus.Gauge
	cutCounter   prometheus.Counter
	writeSeconds prometheus.Histogram
}

// New checks the config; it starts nothing.
func New(cfg Config, log *slog.Logger) (*Master, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim, _ := ParseRate(cfg.AgentRemovalRateLimit)
	pins, _ := parsePins(cfg.AgentIdentities) // checked by Validate
	m := &Master{
		pins: pins, pinnedTo: map[string][]string{},
		cfg: cfg, log: log, ready: make(chan struct{}),
		agents: map[string]*agentEntry{}, tasks: map[string]*store.Task{}, byAgent: map[string]map[string]struct{}{},
		frameworks: map[string]*frameworkEntry{}, byFramework: map[string]map[string]struct{}{},
		offers: map[string]*offer{}, offersByAgent: map[string]map[string]*offer{}, weights: map[string]float64{},
		allocWake: make(chan struct{}, 1), allocAgents: map[string]bool{}, allocRuns: allocator.NewRunHistogram(),
		ev: newEventLog(cfg.EventBuffer), removal: newRemovalQueue(), limiter: lim,
		queueGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "gearbox_master_unreachable_queue",
			Help: "Agents that missed their pings and wait for --agent-removal-rate-limit to be marked unreachable."}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gearbox_master_registry_write_seconds",
			Help: "How long each group commit to the registry took (one transaction, one fsync).", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
		cutCounter: prometheus.NewCounter(prometheus.CounterOpts{Name: "gearbox_master_subscribers_cut_total",
			Help: "Subscribers cut off for falling --subscriber-lag events behind."}),
	}
	m.alloc = hierarchical.New(hierarchical.Config{ObserveRun: m.allocRuns.ObserveRun})
	// The operator's task launch, as a framework that never takes offers.
	if err := m.alloc.AddFramework(operatorFramework, allocator.FrameworkInfo{Roles: []string{allocator.DefaultRole}}, nil, false); err != nil {
		return nil, err
	}
	for _, p := range cfg.AgentIdentities { // in the order given
		id, _, _ := strings.Cut(p, "=")
		id = strings.TrimSpace(id)
		m.pinnedTo[pins[id]] = append(m.pinnedTo[pins[id]], id)
	}
	return m, nil
}

// parsePins reads --agent-identity ID=CN values.
func parsePins(vals []string) (map[string]string, error) {
	pins := map[string]string{}
	for _, v := range vals {
		id, cn, ok := strings.Cut(v, "=")
		id, cn = strings.TrimSpace(id), strings.TrimSpace(cn)
		if !ok || id == "" || cn == "" {
			return nil, fmt.Errorf("%s %q: write AGENT_ID=CERTIFICATE_NAME", setting("agent-identity"), v)
		}
		if err := ids.Validate(id); err != nil {
			return nil, fmt.Errorf("%s %q: agent ID: %w", setting("agent-identity"), v, err)
		}
		if prev, dup := pins[id]; dup {
			return nil, fmt.Errorf("%s: agent ID %s is pinned twice (to %q and %q)", setting("agent-identity"), id, prev, cn)
		}
		pins[id] = cn
	}
	return pins, nil
}

// Ready is closed once the master serves.
func (m *Master) Ready() <-chan struct{} { return m.ready }

// Addr is the address the master listens on, once Ready.
func (m *Master) Addr() string { s, _ := m.addr.Load().(string); return s }

// Run opens the registry, recovers, serves, and returns when ctx ends.
// With etcd endpoints it stands by until elected, leads, and stands by
// again when it must step down (ha.go).
func (m *Master) Run(ctx context.Context) error {
	m.startedAt = time.Now()
	if len(m.cfg.EtcdEndpoints) > 0 {
		return m.runHA(ctx)
	}
	if err := os.MkdirAll(m.cfg.WorkDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", m.cfg.WorkDir, err)
	}
	st, err := store.OpenBolt(filepath.Join(m.cfg.WorkDir, "registry.db"), 5*time.Second)
	if err != nil {
		return err
	}
	defer st.Close()
	m.st = st
	return m.serve(ctx)
}

// serve recovers from m.st, serves, and returns when ctx ends.
func (m *Master) serve(ctx context.Context) error {
	if err := m.recover(ctx); err != nil {
		return err
	}
	m.p = newPersister(m)
	pctx, stopPersister := context.WithCancel(context.WithoutCancel(ctx))
	persisterDone := make(chan struct{})
	go func() { defer close(persisterDone); m.p.run(pctx) }()
	defer func() { stopPersister(); <-persisterDone }()

	srv, opts, err := m.newServer()
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", m.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", m.cfg.Listen, err)
	}
	m.addr.Store(lis.Addr().String())
	var ulis net.Listener
	if m.cfg.Socket != "" {
		if ulis, err = listenUnix(m.cfg.Socket); err != nil {
			lis.Close()
			return err
		}
	}
	closeListeners := func() {
		lis.Close()
		if ulis != nil {
			ulis.Close()
		}
	}
	stopMetrics, err := m.serveMetrics()
	if err != nil {
		closeListeners()
		return err
	}
	defer stopMetrics()

	bg, stopBg := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(5)
	go func() { defer wg.Done(); m.healthLoop(bg) }()
	go func() { defer wg.Done(); m.allocLoop(bg) }()
	go func() { defer wg.Done(); m.removalLoop(bg) }()
	go func() { defer wg.Done(); m.lagLoop(bg) }()
	go func() { defer wg.Done(); m.ev.wakeLoop(bg, m.cfg.SubscriberBatchWindow) }()

	srv.Serve(lis, opts...)
	if ulis != nil {
		srv.Serve(ulis, opts...)
	}
	m.log.Info("master serving", "listen", m.Addr(), "socket", m.cfg.Socket, "mtls", m.cfg.TLSCert != "", "work_dir", m.cfg.WorkDir,
		"agents", len(m.agents), "tasks", len(m.tasks),
		"missed_after", m.missedAfter(), "agent_removal_rate_limit", m.cfg.AgentRemovalRateLimit)
	close(m.ready)
	select {
	case err = <-srv.Err():
		err = fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
		err = nil
	}
	stopBg()
	wg.Wait()
	srv.Stop()
	m.streamLoops.Wait() // every call has returned: no more start
	return err
}

// newServer sets up the master's gRPC server and the options of its
// listener (mutual TLS when configured).
func (m *Master) newServer() (*grpcserver.Server, []grpc.ServerOption, error) {
	authz, _ := newAuthorizer(m.cfg) // checked by Validate
	opts, err := m.listenerOptions(authz)
	if err != nil {
		return nil, nil, err
	}
	srv := grpcserver.New(grpcserver.Config{
		Services: []string{masterv1.Operator_ServiceDesc.ServiceName, schedulerv1.Scheduler_ServiceDesc.ServiceName},
		Register: func(gs *grpc.Server) {
			masterv1.RegisterAgentGatewayServer(gs, &gateway{m: m})
			masterv1.RegisterOperatorServer(gs, &operator{m: m})
			schedulerv1.RegisterSchedulerServer(gs, &schedulerAPI{m: m})
		},
		Authorize: func(ctx context.Context, method string) error {
			if err := authz.check(ctx, method); err != nil {
				return err
			}
			return m.refuseChange(method)
		},
		Options: []grpc.ServerOption{
			grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
			grpc.ForceServerCodecV2(eventCodec{}),
		},
		// Agents' streams do not end by themselves: tell them, so that
		// they register again with the next master at once. Subscribers'
		// streams are cut after Grace.
		EndStreams: m.endAgentStreams,
		Grace:      2 * time.Second,
	})
	return srv, opts, nil
}

// listenerOptions are the credentials of the master's listeners: the unix
// socket's peers are known by the kernel; TCP clients by TLS, or not at
// all. It warns of what the config leaves open.
func (m *Master) listenerOptions(authz *authorizer) ([]grpc.ServerOption, error) {
	// A replicated master's standby and terms serve again and again: said once.
	if m.ha == nil || m.ha.warned.CompareAndSwap(false, true) {
		if m.cfg.TLSCert != "" && !authz.enforce {
			m.log.Warn("every certificate the client CA signed may do everything on this master: restrict with --agent-cn, --readonly-cn, --operator-cn")
		}
		if m.cfg.TLSCert == "" && m.cfg.Insecure {
			m.log.Warn("plaintext TCP with --insecure: anyone who reaches the listen address, every container on this host included, may register agents, launch and kill tasks and mark agents gone", "listen", m.cfg.Listen)
		}
	}
	creds := peercred.Creds{}
	if m.cfg.TLSCert != "" {
		tc, err := tlsutil.Server(m.cfg.TLSCert, m.cfg.TLSKey, m.cfg.TLSClientCA)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert, --tls-key, --tls-client-ca: %w", err)
		}
		creds.Other = credentials.NewTLS(tc)
	}
	return []grpc.ServerOption{grpc.Creds(creds)}, nil
}

// endAgentStreams ends every agent's and framework's stream with
// MASTER_STOPPING.
func (m *Master) endAgentStreams() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.frameworks {
		if f.conn != nil {
			f.conn.close(stoppingErr())
		}
	}
	for _, a := range m.agents {
		if a.conn != nil {
			a.conn.close(stoppingErr())
			a.conn = nil
		}
	}
}

// listenUnix serves the master's unix socket, mode 0600: only its owner
// (the master's user) and root may connect. A stale socket of an earlier
// run is replaced; anything else at the path is an error.
func listenUnix(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("--socket %s: something other than a socket is there: remove it or choose another path", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the socket's directory: %w", err)
	}
	// chmod follows listen (a umask is process-wide); a peer that connects
	// in between is still only served by auth.go's uid check.
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		lis.Close()
		return nil, fmt.Errorf("setting the mode of %s: %w", path, err)
	}
	return lis, nil
}

// SocketAddr is the master's unix socket as a gRPC target
// (unix:///path), or "" without one.
func (m *Master) SocketAddr() string {
	if m.cfg.Socket == "" {
		return ""
	}
	return "unix://" + m.cfg.Socket
}

func (m *Master) missedAfter() time.Duration {
	return m.cfg.AgentPingTimeout * time.Duration(m.cfg.MaxAgentPingTimeouts)
}

// recover loads the registry. Agents that were active count from now: one
// that does not re-register within the ping timeouts is marked unreachable
// by the same health check as any other (Mesos's master failover).
func (m *Master) recover(ctx context.Context) error {
	agents, err := m.st.Agents(ctx)
	if err != nil {
		return fmt.Errorf("reading the registry: %w", err)
	}
	tasks, err := m.st.Tasks(ctx)
	if err != nil {
		return fmt.Errorf("reading the registry: %w", err)
	}
	fws, err := m.st.Frameworks(ctx)
	if err != nil {
		return fmt.Errorf("reading the registry: %w", err)
	}
	if m.weights, err = m.st.Weights(ctx); err != nil {
		return fmt.Errorf("reading the registry: %w", err)
	}
	now := time.Now()
	// A framework's failover clock starts anew with the master.
	for _, f := range fws {
		m.frameworks[f.ID] = &frameworkEntry{Framework: f, disconnectedAt: now, sent: map[string]time.Time{}}
	}
	if err := m.alloc.UpdateWeights(m.weights); err != nil {
		m.log.Warn("the registry's weights were refused by the allocator", "err", err)
	}
	for _, a := range agents {
		e := &agentEntry{Agent: a}
		e.lastBeat.Store(now.UnixNano())
		m.agents[a.ID] = e
	}
	for i := range tasks {
		t := tasks[i]
		m.tasks[t.ID] = &t
		m.index(&t)
	}
	for _, f := range m.frameworks {
		// Inactive until it subscribes again; its tasks count (agents
		// report theirs when they register).
		if err := m.alloc.AddFramework(allocator.FrameworkID(f.ID), allocFramework(f), nil, false); err != nil {
			return fmt.Errorf("framework %s of the registry: %w", f.ID, err)
		}
	}
	m.log.Info("registry recovered", "agents", len(agents), "tasks", len(tasks), "frameworks", len(fws))
	return nil
}

func (m *Master) index(t *store.Task) {
	set := m.byAgent[t.AgentID]
	if set == nil {
		set = map[string]struct{}{}
		m.byAgent[t.AgentID] = set
	}
	set[t.ID] = struct{}{}
	if t.FrameworkID != "" {
		fs := m.byFramework[t.FrameworkID]
		if fs == nil {
			fs = map[string]struct{}{}
			m.byFramework[t.FrameworkID] = fs
		}
		fs[t.ID] = struct{}{}
	}
}

func (m *Master) serveMetrics() (func(), error) {
	return promserve.ServeWithPprof(m.cfg.MetricsListen, m.cfg.MetricsPprof, m.log, m.collectors()...)
}

// collectors are the master's metrics.
func (m *Master) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.queueGauge, m.cutCounter, m.writeSeconds, m.allocRuns,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gearbox_master_agents_active", Help: "Active agents."},
			func() float64 { return float64(m.countAgents(store.AgentActive)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gearbox_master_agents_unreachable", Help: "Unreachable agents."},
			func() float64 { return float64(m.countAgents(store.AgentUnreachable)) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gearbox_master_event_seq", Help: "Sequence number of the last event."},
			func() float64 { return float64(m.ev.lastSeq()) }),
	}
}

func (m *Master) countAgents(s store.AgentState) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, a := range m.agents {
		if a.State == s {
			n++
		}
	}
	return n
}

func versionString() string { return version.Version }

//go:build bench

package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// The master's benchmarks run the real master binary and speak its gRPC
// protocol from simulated agents and subscribers in this process, over
// loopback. Knobs (environment): GEARBOX_BENCH_AGENTS (10000),
// GEARBOX_BENCH_AGENT_CONNS (TCP connections they share, 1000),
// GEARBOX_BENCH_SUBSCRIBERS (1000), GEARBOX_BENCH_EVENT_RATES
// (1000,2500,5000/s), GEARBOX_BENCH_PROFILE (a directory for profiles).

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func raiseFDLimit(t *testing.T) {
	var r syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r)
	r.Cur = r.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		t.Logf("raising the fd limit: %v", err)
	}
}

// procCPU is a process's user+system CPU time.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func procRSS(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

type simAgent struct {
	id      string
	stream  grpc.BidiStreamingClient[masterv1.AgentMessage, masterv1.MasterMessage]
	mu      sync.Mutex
	silent  atomic.Bool
	sent    sync.Map // heartbeat seq → time sent
	lastAck atomic.Int64
	acks    chan *masterv1.MasterMessage
}

func (a *simAgent) send(m *masterv1.AgentMessage) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stream.Send(m)
}

func dialMany(t *testing.T, addr string, n int) []*grpc.ClientConn {
	var conns []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	return conns
}

// registerSim registers a simulated agent and serves its stream: acks of
// heartbeats are timed; other messages go to acks.
func registerSim(ctx context.Context, conn *grpc.ClientConn, i int, lat chan<- time.Duration) (*simAgent, error) {
	return registerSimAs(ctx, conn, i, "", lat)
}

// registerSimAs is registerSim of an agent the master assigned id before
// ("" for a new one): it registers again, as after a master's failover.
func registerSimAs(ctx context.Context, conn *grpc.ClientConn, i int, id string, lat chan<- time.Duration) (*simAgent, error) {
	st, err := masterv1.NewAgentGatewayClient(conn).Connect(ctx)
	if err != nil {
		return nil, err
	}
	a := &simAgent{stream: st, acks: make(chan *masterv1.MasterMessage, 1024)}
	err = a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Register{Register: &masterv1.Register{AgentId: id,
		Hostname: fmt.Sprintf("sim-%05d", i), Resources: &masterv1.Resources{Cpus: 16, MemoryBytes: 64 << 30},
		Attributes: map[string]string{"rack": fmt.Sprintf("r%d", i%40)}}}})
	if err != nil {
		return nil, err
	}
	first, err := st.Recv()
	if err != nil {
		return nil, err
	}
	a.id = first.GetRegistered().GetAgentId()
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				return
			}
			if hb := m.GetHeartbeatAck(); hb != nil {
				a.lastAck.Store(time.Now().UnixNano())
				if v, ok := a.sent.LoadAndDelete(hb.Seq); ok && lat != nil {
					select {
					case lat <- time.Since(v.(time.Time)):
					default:
					}
				}
				continue
			}
			select {
			case a.acks <- m:
			default:
			}
		}
	}()
	return a, nil
}

// registerAll registers len(agents) simulated agents over conns, 64 at a
// time, agent i under id(i) ("" for a new one); it returns how long that
// took.
func registerAll(ctx context.Context, conns []*grpc.ClientConn, agents []*simAgent, id func(int) string, lat chan<- time.Duration) (time.Duration, error) {
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(agents); i += 64 {
				a, err := registerSimAs(ctx, conns[i%len(conns)], i, id(i), lat)
				if err == nil && a.id == "" {
					err = fmt.Errorf("agent %d: the master answered its registration without an agent ID", i)
				}
				if err != nil {
					errs <- err
					return
				}
				agents[i] = a
			}
		}()
	}
	wg.Wait()
	close(errs)
	return time.Since(start), <-errs
}

func (a *simAgent) heartbeat(ctx context.Context, every time.Duration) {
	// Spread agents over the interval, as real ones are.
	select {
	case <-ctx.Done():
		return
	case <-time.After(rand.N(every)):
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var seq uint64
	for {
		if !a.silent.Load() {
			seq++
			a.sent.Store(seq, time.Now())
			if a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Heartbeat{Heartbeat: &masterv1.Heartbeat{Seq: seq}}}) != nil {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func TestBenchMasterHeartbeats(t *testing.T) {
	raiseFDLimit(t)
	nAgents, nConns := envInt("GEARBOX_BENCH_AGENTS", 10000), envInt("GEARBOX_BENCH_AGENT_CONNS", 1000)
	// Over loopback TCP, as agents on other hosts would come (--insecure
	// lets plaintext TCP clients in).
	m := startMasterProc(t, "--insecure", "--agent-ping-timeout", "5s", "--max-agent-ping-timeouts", "3")
	pid := m.cmd.Process.Pid
	conns := dialMany(t, m.listen, nConns)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lat := make(chan time.Duration, 1<<20)
	agents := make([]*simAgent, nAgents)
	regTime, err := registerAll(ctx, conns, agents, func(int) string { return "" }, lat)
	if err != nil {
		t.Fatalf("registering: %v", err)
	}
	for _, a := range agents {
		go a.heartbeat(ctx, 5*time.Second)
	}
	// Warm up one interval, then measure three.
	time.Sleep(6 * time.Second)
	for len(lat) > 0 {
		<-lat
	}
	cpu0, t0 := procCPU(pid), time.Now()
	var peakRSS int64
	for range 15 {
		time.Sleep(time.Second)
		peakRSS = max(peakRSS, procRSS(pid))
	}
	cpu := float64(procCPU(pid)-cpu0) / float64(time.Since(t0))
	var ds []time.Duration
	for len(lat) > 0 {
		ds = append(ds, <-lat)
	}
	hbRate := float64(len(ds)) / time.Since(t0).Seconds()

	// One agent falls silent: detected within 15 s + 1 s of its last ack.
	events := subscribeEvents(t, m, 0)
	victim := agents[nAgents/2]
	victim.silent.Store(true)
	deadline := time.Now().Add(25 * time.Second)
	var detected time.Duration
	for detected == 0 && time.Now().Before(deadline) {
		for _, e := range events.snapshot() {
			if e.Type == masterv1.Event_AGENT_REMOVED && e.Agent.Id == victim.id {
				detected = e.Time.AsTime().Sub(time.Unix(0, victim.lastAck.Load()))
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	report(t, "master, %d simulated agents on %d connections, heartbeat every 5s:\n"+
		"  registration of all: %s\n"+
		"  heartbeats measured: %.0f/s over %s\n"+
		"  master CPU: %.3f cores (target <= 0.5)\n"+
		"  master RSS: %.0f MiB peak (target <= 1024)\n"+
		"  heartbeat round trip: p50 %s p99 %s (n=%d)\n"+
		"  silenced agent marked unreachable %s after its last heartbeat (timeout 15s, target <= 16s)",
		nAgents, nConns, regTime.Round(time.Millisecond), hbRate, time.Since(t0).Round(time.Second), cpu, float64(peakRSS)/(1<<20),
		pct(ds, 50), pct(ds, 99), len(ds), detected.Round(10*time.Millisecond))
	if detected == 0 || detected > 16*time.Second {
		t.Errorf("silenced agent detected after %s", detected)
	}
}

// rawCodec hands a subscriber the bytes of each message, so that a
// thousand subscribers in this process cost what reading, not decoding,
// costs.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

// eventTimes reads seq and time of each event of a SubscribeResponse.
func eventTimes(b []byte, fn func(seq uint64, at time.Time)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return
		}
		b = b[n:]
		if num != 1 || typ != protowire.BytesType {
			n = protowire.ConsumeFieldValue(num, typ, b)
			b = b[n:]
			continue
		}
		ev, n := protowire.ConsumeBytes(b)
		b = b[n:]
		var seq uint64
		var sec, nsec int64
		for len(ev) > 0 {
			fn2, ft, k := protowire.ConsumeTag(ev)
			ev = ev[k:]
			switch {
			case fn2 == 2 && ft == protowire.VarintType:
				v, k := protowire.ConsumeVarint(ev)
				seq, ev = v, ev[k:]
			case fn2 == 3 && ft == protowire.BytesType:
				ts, k := protowire.ConsumeBytes(ev)
				ev = ev[k:]
				for len(ts) > 0 {
					tn, tt, k := protowire.ConsumeTag(ts)
					ts = ts[k:]
					v, k := protowire.ConsumeVarint(ts)
					_ = tt
					ts = ts[k:]
					if tn == 1 {
						sec = int64(v)
					} else {
						nsec = int64(v)
					}
				}
			default:
				k := protowire.ConsumeFieldValue(fn2, ft, ev)
				if k < 0 {
					return
				}
				ev = ev[k:]
			}
		}
		fn(seq, time.Unix(sec, nsec))
	}
}

// countEvents counts the events of a SubscribeResponse and reads the time
// of the first.
func countEvents(b []byte) (int, time.Time) {
	var n int
	var at time.Time
	for len(b) > 0 {
		num, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			break
		}
		v := protowire.ConsumeFieldValue(num, typ, b[k:])
		if v < 0 {
			break
		}
		if num == 1 && typ == protowire.BytesType {
			if n == 0 {
				eventTimes(b[:k+v], func(_ uint64, t time.Time) { at = t })
			}
			n++
		}
		b = b[k+v:]
	}
	return n, at
}

type fanout struct {
	mu  sync.Mutex
	lat []time.Duration
	n   atomic.Int64
}

// pin sets the CPU affinity of every thread of pid (taskset -a); it
// reports whether it could.
func pin(t *testing.T, pid int, cpus string) bool {
	out, err := exec.Command("taskset", "-a", "-p", "-c", cpus, strconv.Itoa(pid)).CombinedOutput()
	if err != nil {
		t.Logf("taskset %s %d: %v %s", cpus, pid, err, out)
		return false
	}
	return true
}

// fanPhase is what one phase of the fan-out benchmark measured.
type fanPhase struct {
	rate               int
	p50, p99           time.Duration
	n                  int64
	published          float64
	masterCPU, selfCPU float64
	writes, writeMean  float64
	el                 time.Duration
}

func (p fanPhase) line() string {
	perCoreSec := 0.0
	if p.masterCPU > 0 {
		perCoreSec = float64(p.n) / (p.masterCPU * p.el.Seconds())
	}
	return fmt.Sprintf("%.0f events/s published, delivery p50 %s p99 %s, %d deliveries (%.0f/s, %.0f per master core-second); CPU: master %.2f, subscribers and sources %.2f cores; registry: %.0f commits/s of %.1f ms",
		p.published, p.p50, p.p99, p.n, float64(p.n)/p.el.Seconds(), perCoreSec, p.masterCPU, p.selfCPU, p.writes, p.writeMean*1000)
}

// TestBenchMasterEventFanout measures the master's event fan-out: the
// master in a process of its own (pinned to the second core where there
// is one), subscribers and sources in this one (on the first), its
// registry on tmpfs so that the figure is the fan-out's and not the
// disk's. Phases at each rate of GEARBOX_BENCH_EVENT_RATES (default
// 1000,2500,5000; GEARBOX_BENCH_EVENT_RATE alone is the old knob), each
// with every subscriber reading, then with one more that stalls.
// GEARBOX_BENCH_PROFILE=dir keeps a CPU profile of the master for each
// phase there.
func TestBenchMasterEventFanout(t *testing.T) {
	raiseFDLimit(t)
	nSubs := envInt("GEARBOX_BENCH_SUBSCRIBERS", 1000)
	rates := []int{1000, 2500, 5000}
	if v := os.Getenv("GEARBOX_BENCH_EVENT_RATES"); v != "" {
		rates = nil
		for _, f := range strings.Split(v, ",") {
			if r, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && r > 0 {
				rates = append(rates, r)
			}
		}
	} else if r := envInt("GEARBOX_BENCH_EVENT_RATE", 0); r > 0 {
		rates = []int{r}
	}
	pinned := runtime.NumCPU() >= 2 && pin(t, os.Getpid(), "0")
	if pinned {
		defer pin(t, os.Getpid(), fmt.Sprintf("0-%d", runtime.NumCPU()-1))
	}
	d := 10 * time.Second
	// GEARBOX_BENCH_BASE_MASTER: a gearbox binary to measure first, at
	// each rate, as the baseline of the same run.
	type build struct{ name, bin string }
	builds := []build{{"this tree", ""}}
	if base := os.Getenv("GEARBOX_BENCH_BASE_MASTER"); base != "" {
		builds = []build{{"base " + base, base}, builds[0]}
	}
	defer func() { masterBin = "" }()
	var b strings.Builder
	best := map[string]int{}
	for _, rate := range rates {
		for _, bd := range builds {
			masterBin = bd.bin
			plain := fanoutPhase(t, fmt.Sprintf("plain-%d", rate), rate, nSubs, false, d, pinned)
			stall := fanoutPhase(t, fmt.Sprintf("stalled-%d", rate), rate, nSubs, true, d, pinned)
			fmt.Fprintf(&b, "  offered %d/s, %s\n    all reading:       %s\n    one more, stalled: %s\n    p99 ratio stalled/all: %.2f (target <= 1.1)\n",
				rate, bd.name, plain.line(), stall.line(), ratio(stall.p99, plain.p99))
			if plain.p99 <= 100*time.Millisecond && rate > best[bd.name] {
				best[bd.name] = rate
			}
		}
	}
	load, _ := os.ReadFile("/proc/loadavg")
	report(t, "master event fan-out, %d subscribers, status updates as events (each a TASK_UPDATED), %s per phase; master pinned to core 1, this process to core 0: %v; registry on tmpfs; load average %s\n%s"+
		"  highest rate offered with delivery p99 <= 100ms: %v (target: 5000/s)",
		nSubs, d, pinned, strings.TrimSpace(string(load)), b.String(), best)
}

// fanoutPhase runs one phase on a master of its own: a phase must not
// inherit the previous one's backlog.
func fanoutPhase(t *testing.T, name string, rate, nSubs int, stalled bool, d time.Duration, pinned bool) fanPhase {
	work, err := os.MkdirTemp("/dev/shm", "gearbox-bench-master-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	args := []string{"--insecure", "--event-buffer", "200000", "--subscriber-lag", "100000", "--agent-ping-timeout", "5s", "--work-dir", work}
	profDir := os.Getenv("GEARBOX_BENCH_PROFILE")
	if profDir != "" {
		args = append(args, "--metrics-pprof")
	}
	m := startMasterProc(t, args...)
	if pinned {
		pin(t, m.cmd.Process.Pid, "1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const nSources, tasksPer = 50, 20
	conns := dialMany(t, m.listen, nSources)
	sources := fanoutSources(ctx, t, m, conns, tasksPer)
	subConns := dialMany(t, m.listen, 50)
	defer func() {
		cancel()
		for _, c := range append(conns, subConns...) {
			c.Close()
		}
		m.stop(t, syscall.SIGTERM)
	}()
	seq := func() float64 { v, _ := strconv.ParseFloat(m.metric(t, "gearbox_master_event_seq"), 64); return v }
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	f := startSubscribers(sctx, subConns, nSubs)
	if stalled {
		// Its own connection with fixed windows: the master's sends
		// to it block once 64 KiB are in flight.
		sc, _ := grpc.NewClient(m.listen, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
		defer sc.Close()
		st, err := masterv1.NewOperatorClient(sc).Subscribe(sctx, &masterv1.SubscribeRequest{})
		if err == nil {
			st.Recv() // then never again
		}
	}
	var profDone chan struct{}
	if profDir != "" {
		profDone = make(chan struct{})
		go func() {
			defer close(profDone)
			saveProfile(t, m.metrics, filepath.Join(profDir, "master-fanout-"+name+".pprof"), d-2*time.Second)
		}()
	}
	seq0, t0 := seq(), time.Now()
	mcpu0, scpu0 := procCPU(m.cmd.Process.Pid), procCPU(os.Getpid())
	wsum := func() (float64, float64) {
		n, _ := strconv.ParseFloat(m.metric(t, "gearbox_master_registry_write_seconds_count"), 64)
		s, _ := strconv.ParseFloat(m.metric(t, "gearbox_master_registry_write_seconds_sum"), 64)
		return n, s
	}
	wn0, ws0 := wsum()
	offerUpdates(sources, name, rate, tasksPer, d)
	el := time.Since(t0)
	ph := fanPhase{rate: rate, el: el, published: (seq() - seq0) / el.Seconds(),
		masterCPU: float64(procCPU(m.cmd.Process.Pid)-mcpu0) / float64(el), selfCPU: float64(procCPU(os.Getpid())-scpu0) / float64(el)}
	wn, ws := wsum()
	ph.writes = (wn - wn0) / el.Seconds()
	if wn > wn0 {
		ph.writeMean = (ws - ws0) / (wn - wn0)
	}
	if profDone != nil {
		<-profDone
	}
	time.Sleep(time.Second)
	f.mu.Lock()
	defer f.mu.Unlock()
	ph.p50, ph.p99, ph.n = pct(f.lat, 50), pct(f.lat, 99), f.n.Load()
	return ph
}

// fanoutSources are simulated agents with running tasks, whose status
// updates are the events.
func fanoutSources(ctx context.Context, t *testing.T, m *masterProc, conns []*grpc.ClientConn, tasksPer int) []*simAgent {
	var sources []*simAgent
	for i := range conns {
		a, err := registerSim(ctx, conns[i], i, nil)
		if err != nil {
			t.Fatal(err)
		}
		sources = append(sources, a)
		go a.heartbeat(ctx, 5*time.Second)
		for k := range tasksPer {
			id := fmt.Sprintf("t-%d-%d", i, k)
			if _, err := m.c.LaunchTask(ctx, &masterv1.LaunchTaskRequest{TaskId: id, Image: "busybox", AgentId: a.id}); err != nil {
				t.Fatal(err)
			}
		}
	}
	return sources
}

// startSubscribers subscribes n times over conns and returns once each
// has its first event; a sample of delivery latencies lands in the fanout.
func startSubscribers(ctx context.Context, conns []*grpc.ClientConn, n int) *fanout {
	f := &fanout{}
	var ready sync.WaitGroup
	for i := range n {
		ready.Add(1)
		go func() {
			st, err := masterv1.NewOperatorClient(conns[i%len(conns)]).Subscribe(ctx, &masterv1.SubscribeRequest{}, grpc.ForceCodecV2(rawCodec{}))
			if err != nil {
				ready.Done()
				return
			}
			first := true
			for {
				var b []byte
				if err := st.RecvMsg(&b); err != nil {
					if first {
						ready.Done()
					}
					return
				}
				if first {
					first = false
					ready.Done()
					continue
				}
				// The first event of a batch waited longest: its delay is
				// the batch's. Reading only it keeps a thousand
				// subscribers in one process from costing more than the
				// master they measure.
				now := time.Now()
				n, at := countEvents(b)
				f.n.Add(int64(n))
				if n > 0 {
					f.mu.Lock()
					f.lat = append(f.lat, now.Sub(at))
					f.mu.Unlock()
				}
			}
		}()
	}
	ready.Wait()
	return f
}

// offerUpdates sends status updates at rate for d, spread over the
// sources; each changes its task's message, so each is an event.
func offerUpdates(sources []*simAgent, name string, rate, tasksPer int, d time.Duration) {
	per := time.Second / time.Duration(max(rate/len(sources), 1))
	var wg sync.WaitGroup
	end := time.Now().Add(d)
	for i, a := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk := time.NewTicker(per)
			defer tk.Stop()
			for n := 0; time.Now().Before(end); n++ {
				<-tk.C
				id := fmt.Sprintf("t-%d-%d", i, n%tasksPer)
				a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Update{Update: &masterv1.StatusUpdate{
					Uuid: fmt.Sprintf("%s-%d", name, n), Status: &masterv1.TaskStatus{TaskId: id, State: typesv1.TaskState_TASK_RUNNING, Message: fmt.Sprintf("%s %d", name, n)}}}})
			}
		}()
	}
	wg.Wait()
}

// saveProfile keeps a CPU profile of the master (served with
// --metrics-pprof) of the next d.
func saveProfile(t *testing.T, metrics, path string, d time.Duration) {
	q := "profile?seconds=" + strconv.Itoa(int(d.Seconds()))
	if d == 0 {
		q = "allocs"
	}
	resp, err := http.Get(fmt.Sprintf("http://%s/debug/pprof/%s", metrics, q))
	if err != nil {
		t.Logf("profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Logf("profile: %v", err)
	}
}

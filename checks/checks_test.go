package checks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/errdefs"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"

	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

func TestFromProtoRefusesNamingTheField(t *testing.T) {
	cases := []struct {
		name  string
		p     *typesv1.HealthCheck
		field string
	}{
		{"nothing", &typesv1.HealthCheck{}, "health_check.type"},
		{"two kinds", &typesv1.HealthCheck{Command: []string{"true"}, Tcp: &typesv1.TCPCheck{Port: 80}}, "health_check.type"},
		{"type mismatch", &typesv1.HealthCheck{Type: HTTP, Tcp: &typesv1.TCPCheck{Port: 80}}, "health_check.type"},
		{"empty command", &typesv1.HealthCheck{Type: Command}, "health_check.command"},
		{"blank program", &typesv1.HealthCheck{Command: []string{" "}}, "health_check.command"},
		{"http port 0", &typesv1.HealthCheck{Http: &typesv1.HTTPCheck{}}, "health_check.http.port"},
		{"http port 70000", &typesv1.HealthCheck{Http: &typesv1.HTTPCheck{Port: 70000}}, "health_check.http.port"},
		{"tcp port 65536", &typesv1.HealthCheck{Tcp: &typesv1.TCPCheck{Port: 65536}}, "health_check.tcp.port"},
		{"http path", &typesv1.HealthCheck{Http: &typesv1.HTTPCheck{Port: 80, Path: "x y"}}, "health_check.http.path"},
		{"http scheme", &typesv1.HealthCheck{Http: &typesv1.HTTPCheck{Port: 80, Scheme: "ftp"}}, "health_check.http.scheme"},
		{"interval too short", &typesv1.HealthCheck{Command: []string{"true"}, Interval: dur(time.Millisecond)}, "health_check.interval"},
		{"negative interval", &typesv1.HealthCheck{Command: []string{"true"}, Interval: dur(-time.Second)}, "health_check.interval"},
		{"timeout over interval", &typesv1.HealthCheck{Command: []string{"true"}, Interval: dur(time.Second), Timeout: dur(2 * time.Second)}, "health_check.timeout"},
		{"zero timeout", &typesv1.HealthCheck{Command: []string{"true"}, Timeout: dur(0)}, "health_check.timeout"},
		{"negative delay", &typesv1.HealthCheck{Command: []string{"true"}, Delay: dur(-time.Second)}, "health_check.delay"},
		{"negative grace", &typesv1.HealthCheck{Command: []string{"true"}, GracePeriod: dur(-time.Second)}, "health_check.grace_period"},
		{"too many failures", &typesv1.HealthCheck{Command: []string{"true"}, ConsecutiveFailures: 5000}, "health_check.consecutive_failures"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromProto(tc.p)
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("err = %v, want InvalidArgument", err)
			}
			if !strings.HasPrefix(err.Error(), tc.field+":") {
				t.Fatalf("err = %q, want it to name %s", err, tc.field)
			}
		})
	}
}

func TestFromProtoDefaultsAndRoundTrip(t *testing.T) {
	c, err := FromProto(&typesv1.HealthCheck{Http: &typesv1.HTTPCheck{Port: 8080}})
	if err != nil {
		t.Fatal(err)
	}
	want := Check{Kind: HTTP, Port: 8080, Path: "/", Scheme: "http", Interval: DefaultInterval, Timeout: DefaultInterval,
		ConsecutiveFailures: DefaultConsecutiveFailures, GracePeriod: DefaultGracePeriod}
	if fmt.Sprint(c) != fmt.Sprint(want) || c.Timeout != want.Timeout || c.Interval != want.Interval {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	back, err := FromProto(c.Proto())
	if err != nil || fmt.Sprintf("%+v", back) != fmt.Sprintf("%+v", c) {
		t.Fatalf("round trip: %+v, %v; want %+v", back, err, c)
	}
	cmd, err := FromProto(&typesv1.HealthCheck{Command: []string{"sh", "-c", "true"}, Interval: dur(time.Second), Timeout: dur(time.Second), Delay: dur(2 * time.Second), GracePeriod: dur(0), ConsecutiveFailures: 2})
	if err != nil {
		t.Fatal(err)
	}
	if back, _ := FromProto(cmd.Proto()); fmt.Sprintf("%+v", back) != fmt.Sprintf("%+v", cmd) {
		t.Fatalf("round trip: %+v, want %+v", back, cmd)
	}
}

func TestRecordFollowsMesosGraceAndFailures(t *testing.T) {
	start := time.Unix(1000, 0)
	e := &entry{check: Check{GracePeriod: 10 * time.Second, ConsecutiveFailures: 2}, started: start, status: Status{State: Starting}}
	steps := []struct {
		ok            bool
		at            time.Duration
		state         State
		failures      int
		changed, fail bool
	}{
		{false, 1 * time.Second, Starting, 0, false, false}, // in grace: not counted
		{false, 5 * time.Second, Starting, 0, false, false},
		{true, 6 * time.Second, Healthy, 0, true, false}, // a success ends the grace period
		{false, 7 * time.Second, Unhealthy, 1, true, false},
		{true, 8 * time.Second, Healthy, 0, true, false},
		{false, 9 * time.Second, Unhealthy, 1, true, false},
		{false, 10 * time.Second, Unhealthy, 2, false, true},
	}
	for i, s := range steps {
		changed, failed := e.record(s.ok, "out", start.Add(s.at))
		if e.status.State != s.state || e.status.Failures != s.failures || changed != s.changed || failed != s.fail {
			t.Fatalf("step %d: state %s failures %d changed %v failed %v; want %s %d %v %v",
				i, e.status.State, e.status.Failures, changed, failed, s.state, s.failures, s.changed, s.fail)
		}
	}
	// Without a success, failures after the grace period count.
	e = &entry{check: Check{GracePeriod: time.Second, ConsecutiveFailures: 1}, started: start, status: Status{State: Starting}}
	if _, failed := e.record(false, "x", start.Add(2*time.Second)); !failed || e.status.State != Unhealthy {
		t.Fatalf("after grace: state %s failed %v", e.status.State, failed)
	}
}

// ownProcess is an Env whose container is this test process: HTTP and TCP
// checks then run in the test's own network namespace.
func ownProcess(exec func(ctx context.Context, args []string, out io.Writer) (int32, error)) Env {
	return Env{
		Pid: func(context.Context, string) (uint32, error) { return uint32(os.Getpid()), nil },
		Exec: func(ctx context.Context, _ string, args []string, out io.Writer) (int32, error) {
			return exec(ctx, args, out)
		},
	}
}

func TestProbeHTTPAndTCP(t *testing.T) {
	var code atomic.Int32
	code.Store(200)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	tls := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tls.Close()
	port := func(s *httptest.Server) uint16 { return uint16(s.Listener.Addr().(*net.TCPAddr).Port) }
	env := ownProcess(nil)
	var proc process
	ctx := context.Background()
	check := Check{Kind: HTTP, Port: port(srv), Path: "/health", Scheme: "http", Timeout: time.Second}
	for _, tc := range []struct {
		code int32
		ok   bool
	}{{200, true}, {302, true}, {399, true}, {404, false}, {500, false}} {
		code.Store(tc.code)
		ok, out := probe(ctx, env, "c", check, &proc)
		if ok != tc.ok || !strings.Contains(out, fmt.Sprint(tc.code)) {
			t.Errorf("status %d: ok=%v out=%q, want ok=%v", tc.code, ok, out, tc.ok)
		}
	}
	if ok, out := probe(ctx, env, "c", Check{Kind: HTTP, Port: port(tls), Path: "/", Scheme: "https", Timeout: time.Second}, &proc); !ok {
		t.Errorf("https with a self-signed certificate: %q, want healthy (not verified, as Mesos)", out)
	}
	if ok, out := probe(ctx, env, "c", Check{Kind: TCP, Port: port(srv), Timeout: time.Second}, &proc); !ok {
		t.Errorf("tcp to a listener: %q", out)
	}
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	if ok, out := probe(ctx, env, "c", Check{Kind: TCP, Port: closed, Timeout: time.Second}, &proc); ok || !strings.Contains(out, "refused") {
		t.Errorf("tcp to a closed port: ok=%v %q, want refused", ok, out)
	}
	// The start time that, with the pid, names the process for good.
	if a, err := procStart(uint32(os.Getpid())); err != nil || a == 0 || a != proc.start {
		t.Errorf("own start time %d (%v), recorded %d", a, err, proc.start)
	}
	// A process that is gone.
	if _, err := dialIn(ctx, process{pid: 1 << 30}, "127.0.0.1:1"); !errors.Is(err, ErrProcessGone) {
		t.Errorf("dial into a vanished process's namespace: %v", err)
	}
}

func TestProbeCommandBoundsOutputAndTimesOut(t *testing.T) {
	env := ownProcess(func(ctx context.Context, args []string, out io.Writer) (int32, error) {
		switch args[0] {
		case "chatty":
			for range 100 {
				out.Write([]byte(strings.Repeat("x", 1000)))
			}
			return 1, nil
		case "hang":
			<-ctx.Done()
			return -1, ctx.Err()
		}
		out.Write([]byte("fine"))
		return 0, nil
	})
	ok, out := probe(context.Background(), env, "c", Check{Kind: Command, Command: []string{"ok"}}, &process{})
	if !ok || out != "fine" {
		t.Errorf("ok: %v %q", ok, out)
	}
	ok, out = probe(context.Background(), env, "c", Check{Kind: Command, Command: []string{"chatty"}}, &process{})
	if ok || len(out) > MaxOutput+100 || !strings.Contains(out, "exit status 1") {
		t.Errorf("chatty: ok=%v len=%d", ok, len(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	ok, out = probe(ctx, env, "c", Check{Kind: Command, Command: []string{"hang"}, Timeout: 50 * time.Millisecond}, &process{})
	if ok || !strings.Contains(out, "timed out") {
		t.Errorf("hang: ok=%v %q", ok, out)
	}
}

func TestSchedulerRunsChecksChangesAndFails(t *testing.T) {
	var mu sync.Mutex
	healthy := map[string]bool{"a": true, "b": true}
	env := ownProcess(nil)
	env.Exec = func(_ context.Context, id string, _ []string, _ io.Writer) (int32, error) {
		mu.Lock()
		defer mu.Unlock()
		if healthy[id] {
			return 0, nil
		}
		return 1, nil
	}
	changes := make(chan string, 100)
	failed := make(chan string, 10)
	s := New(Config{Env: env, Workers: 2,
		OnChange: func(id string, st Status) { changes <- id + ":" + st.State.String() },
		OnFailed: func(id string, _ Check, st Status) { failed <- id },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c := Check{Kind: Command, Command: []string{"x"}, Interval: 20 * time.Millisecond, Timeout: 20 * time.Millisecond, ConsecutiveFailures: 3}
	s.Add("a", c, time.Now())
	s.Add("b", c, time.Now())
	want := func(ch chan string, v string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != v {
				t.Fatalf("got %s, want %s", got, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", v)
		}
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case v := <-changes:
			got[v] = true
		case <-time.After(10 * time.Second):
			t.Fatal("no change")
		}
	}
	if !got["a:HEALTH_STATE_HEALTHY"] || !got["b:HEALTH_STATE_HEALTHY"] {
		t.Fatalf("changes %v", got)
	}
	s.Remove("b")
	mu.Lock()
	healthy["a"], healthy["b"] = false, false
	mu.Unlock()
	want(changes, "a:HEALTH_STATE_UNHEALTHY")
	want(failed, "a")
	if _, ok := s.Status("a"); ok {
		t.Fatal("a failed container is still checked")
	}
	if _, ok := s.Status("b"); ok {
		t.Fatal("a removed container is still checked")
	}
	select {
	case v := <-changes:
		t.Fatalf("change after removal: %s", v)
	case v := <-failed:
		t.Fatalf("failure after removal: %s", v)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestNextBatchesChecksDueSoon(t *testing.T) {
	s := New(Config{})
	now := time.Now()
	add := func(id string, in, interval time.Duration) {
		s.Add(id, Check{Kind: TCP, Port: 1, Interval: interval, Timeout: interval}, now.Add(in))
	}
	add("due", 0, time.Second)
	add("soon", 50*time.Millisecond, time.Second)
	add("later", 500*time.Millisecond, time.Second)
	add("soon-but-frequent", 50*time.Millisecond, 100*time.Millisecond) // may run 25ms early at most
	batch, _ := s.next(now)
	var got []string
	for _, e := range batch {
		got = append(got, e.id)
	}
	if strings.Join(got, ",") != "due,soon" {
		t.Fatalf("batch %v, want due,soon", got)
	}
	if batch, wait := s.next(now); len(batch) != 0 || wait != 50*time.Millisecond {
		t.Fatalf("then %d entries, wait %v; want none for 50ms", len(batch), wait)
	}
	if batch, _ := s.next(now.Add(50 * time.Millisecond)); len(batch) != 1 || batch[0].id != "soon-but-frequent" {
		t.Fatalf("at its due time: %v, want soon-but-frequent", batch)
	}
}

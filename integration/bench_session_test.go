//go:build bench

package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/internal/bulkout"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// agentSession runs a command through LaunchNestedContainerSession with
// stdin closed and copies its stdout to out; it returns at the exit frame.
func agentSession(ctx context.Context, id string, out io.Writer, args ...string) error {
	st, err := h.client.LaunchNestedContainerSession(ctx)
	if err != nil {
		return err
	}
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: id, Command: args}}})
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		switch f := m.Frame.(type) {
		case *agentv1.SessionResponse_Stdout:
			out.Write(f.Stdout)
		case *agentv1.SessionResponse_Exit:
			if f.Exit.ExitCode != 0 {
				return fmt.Errorf("exit %d", f.Exit.ExitCode)
			}
			return nil
		}
	}
}

// agentSessionBulk is agentSession with bulk output: stdout comes on a
// connection of its own, as raw bytes.
func agentSessionBulk(ctx context.Context, id string, out io.Writer, args ...string) error {
	st, err := h.client.LaunchNestedContainerSession(ctx)
	if err != nil {
		return err
	}
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: id, Command: args, BulkOutput: true}}})
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	rcv := bulkout.NewReceiver(h.agentSock, out)
	defer rcv.Close()
	for {
		m, err := st.Recv()
		if err != nil {
			return err
		}
		switch f := m.Frame.(type) {
		case *agentv1.SessionResponse_BulkOutput:
			if err := rcv.Start(ctx, f.BulkOutput.Token); err != nil {
				return err
			}
		case *agentv1.SessionResponse_Stdout:
			return errors.New("a stdout frame in bulk mode")
		case *agentv1.SessionResponse_Exit:
			if _, err := rcv.Wait(); err != nil {
				return err
			}
			if f.Exit.ExitCode != 0 {
				return fmt.Errorf("exit %d", f.Exit.ExitCode)
			}
			return nil
		}
	}
}

// directExecer is what a careful direct client does: an exec of a copy of
// the container's process, FIFOs, wait, start, output copied, delete.
type directExecer struct {
	task client.Task
	spec specs.Process
	dir  string
	n    atomic.Int64
}

func newDirectExecer(t *testing.T, id string) *directExecer {
	ctx := namespaces.WithNamespace(context.Background(), h.namespace)
	cont, err := h.ctrd(t).LoadContainer(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	task, err := cont.Task(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err := cont.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.dir, "bench-fifo")
	os.MkdirAll(dir, 0o700)
	return &directExecer{task: task, spec: *spec.Process, dir: dir}
}

// exec returns once the exit status is known and the output copied; the
// exec is deleted after that, as the agent does after its exit frame.
func (d *directExecer) exec(out io.Writer, args ...string) error {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), h.namespace), 5*time.Minute)
	defer cancel()
	p := d.spec
	p.Args, p.Terminal = args, false
	proc, err := d.task.Exec(ctx, fmt.Sprintf("direct-%d", d.n.Add(1)), &p, cio.NewCreator(cio.WithStreams(nil, out, io.Discard), cio.WithFIFODir(d.dir)))
	if err != nil {
		return err
	}
	defer proc.Delete(context.WithoutCancel(ctx), client.WithProcessKill)
	ch, err := proc.Wait(ctx)
	if err != nil {
		return err
	}
	if err := proc.Start(ctx); err != nil {
		return err
	}
	st := <-ch
	proc.IO().Wait()
	if st.ExitCode() != 0 {
		return fmt.Errorf("exit %d", st.ExitCode())
	}
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// sessionBench gives a session benchmark a running container, a direct
// execer for it, and an agent that allows 64 sessions (the harness's
// allows 3).
func sessionBench(t *testing.T) *directExecer {
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	args := []string{"--max-sessions", "64"}
	if os.Getenv("GEARBOX_BENCH_PROFILE") != "" {
		args = append(args, "--metrics-pprof")
	}
	if err := h.startAgentWith(args, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.stopAgent(syscall.SIGTERM)
		h.startAgent()
	})
	launch(t, "bench-sess", "sleep", "3600")
	return newDirectExecer(t, "bench-sess")
}

// exec true, sequential, interleaved with direct execs.
func TestBenchSessionExec(t *testing.T) {
	d := sessionBench(t)
	ctx := context.Background()
	const n, warmup = 200, 10
	var at, dt []time.Duration
	for i := range n + warmup {
		start := time.Now()
		if err := agentSession(ctx, "bench-sess", io.Discard, "true"); err != nil {
			t.Fatalf("agent exec %d: %v", i, err)
		}
		a := time.Since(start)
		start = time.Now()
		if err := d.exec(io.Discard, "true"); err != nil {
			t.Fatalf("direct exec %d: %v", i, err)
		}
		if i >= warmup {
			at, dt = append(at, a), append(dt, time.Since(start))
		}
	}
	report(t, "exec true, sequential, n=%d\n  agent : p50 %v  p99 %v\n  direct: p50 %v  p99 %v\n  ratio : p50 %.3f  p99 %.3f (target <= 1.2)",
		n, pct(at, 50), pct(at, 99), pct(dt, 50), pct(dt, 99), ratio(pct(at, 50), pct(dt, 50)), ratio(pct(at, 99), pct(dt, 99)))
}

// 1 GiB of output, median of 3 each, interleaved: the session in frames,
// the session in bulk mode, and the direct FIFO.
func TestBenchSessionBulk(t *testing.T) {
	d := sessionBench(t)
	ctx := context.Background()
	const size = 1 << 30
	paths := []string{"frames", "bulk", "direct"}
	// MB/s, and CPU per GiB moved: the agent's, and this process's (the
	// client's decoding, or the direct copy); far steadier than MB/s on a
	// shared machine.
	rate, agentCPU, clientCPU := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	agentPid := h.agentCmd.Process.Pid
	// What the agent spends idle, to tell from what a transfer costs.
	i0, idleFrom := procCPU(agentPid), time.Now()
	time.Sleep(3 * time.Second)
	idle := float64(procCPU(agentPid)-i0) / float64(time.Since(idleFrom))
	// GEARBOX_BENCH_PROFILE=dir: CPU and allocation profiles of the agent
	// and of this process (the client) during each path's first run.
	profDir := os.Getenv("GEARBOX_BENCH_PROFILE")
	for i := range 3 {
		for _, path := range paths {
			cw := &countWriter{}
			stopProf := func() {}
			if profDir != "" && i == 0 {
				stopProf = profileBulk(t, profDir, path)
			}
			a0, c0 := procCPU(agentPid), procCPU(os.Getpid())
			start := time.Now()
			var err error
			switch path {
			case "frames":
				err = agentSession(ctx, "bench-sess", cw, "head", "-c", fmt.Sprint(size), "/dev/zero")
			case "bulk":
				err = agentSessionBulk(ctx, "bench-sess", cw, "head", "-c", fmt.Sprint(size), "/dev/zero")
			default:
				err = d.exec(cw, "head", "-c", fmt.Sprint(size), "/dev/zero")
			}
			if err != nil || cw.n != size {
				t.Fatalf("%s bulk: %v, %d bytes", path, err, cw.n)
			}
			stopProf()
			rate[path] = append(rate[path], float64(size)/1e6/time.Since(start).Seconds())
			agentCPU[path] = append(agentCPU[path], (procCPU(agentPid) - a0).Seconds())
			clientCPU[path] = append(clientCPU[path], (procCPU(os.Getpid()) - c0).Seconds())
		}
	}
	med := func(v []float64) float64 { sort.Float64s(v); return v[len(v)/2] }
	load, _ := os.ReadFile("/proc/loadavg")
	report(t, "1 GiB of stdout (median of 3; load average %s; the agent idle: %.3f cores)\n"+
		"  session, frames: %.0f MB/s; CPU per GiB: agent %.2f s, client %.2f s\n"+
		"  session, bulk  : %.0f MB/s; CPU per GiB: agent %.2f s, client %.2f s\n"+
		"  direct FIFO    : %.0f MB/s; CPU per GiB: reader %.2f s\n"+
		"  ratio to direct: frames %.3f, bulk %.3f (target >= 0.9)",
		strings.TrimSpace(string(load)), idle, med(rate["frames"]), med(agentCPU["frames"]), med(clientCPU["frames"]),
		med(rate["bulk"]), med(agentCPU["bulk"]), med(clientCPU["bulk"]), med(rate["direct"]), med(clientCPU["direct"]),
		med(rate["frames"])/med(rate["direct"]), med(rate["bulk"])/med(rate["direct"]))
}

// profileBulk profiles the agent (CPU, for 8 s) and this process (CPU,
// until the returned stop) during one bulk run, then takes the agent's
// allocation profile.
func profileBulk(t *testing.T, dir, path string) (stop func()) {
	f, err := os.Create(filepath.Join(dir, "client-"+path+".pprof"))
	if err != nil {
		t.Fatal(err)
	}
	pprof.StartCPUProfile(f)
	done := make(chan struct{})
	go func() {
		defer close(done)
		saveProfile(t, h.metricsAddr, filepath.Join(dir, "agent-"+path+".pprof"), 8*time.Second)
	}()
	return func() {
		pprof.StopCPUProfile()
		f.Close()
		<-done
		saveProfile(t, h.metricsAddr, filepath.Join(dir, "agent-allocs-"+path+".pprof"), 0)
	}
}

// TTY echo: one keystroke, its echo back, 1,000 times.
func TestBenchSessionEcho(t *testing.T) {
	sessionBench(t)
	ctx := context.Background()
	tctx, cancel := context.WithCancel(ctx)
	st, err := h.client.LaunchNestedContainerSession(tctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "bench-sess", Command: []string{"cat"}, Tty: true,
		Size: &agentv1.WindowSize{Width: 80, Height: 24}}}})
	var echo []time.Duration
	for i := range 1000 + 20 {
		key := []byte{byte('a' + i%26)}
		start := time.Now()
		st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: key}})
		for {
			m, err := st.Recv()
			if err != nil {
				t.Fatalf("echo %d: %v", i, err)
			}
			if bytes.Contains(m.GetStdout(), key) {
				break
			}
		}
		if i%100 == 99 { // keep the line short
			st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: []byte("\r")}})
			for {
				m, err := st.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Count(m.GetStdout(), []byte("\n")) > 0 {
					break
				}
			}
		}
		if i >= 20 {
			echo = append(echo, time.Since(start))
		}
	}
	cancel()
	report(t, "TTY echo of one keystroke, n=1000\n  p50 %v  p99 %v (target p99 <= 5ms)", pct(echo, 50), pct(echo, 99))
}

// 50 at once through each path.
func TestBenchSessionConcurrent(t *testing.T) {
	d := sessionBench(t)
	ctx := context.Background()
	const conc = 50
	wall := func(fn func() error) (time.Duration, int) {
		var wg sync.WaitGroup
		var failures atomic.Int64
		start := time.Now()
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fn(); err != nil {
					failures.Add(1)
					t.Log(err)
				}
			}()
		}
		wg.Wait()
		return time.Since(start), int(failures.Load())
	}
	aw, af := wall(func() error { return agentSession(ctx, "bench-sess", io.Discard, "true") })
	dw, df := wall(func() error { return d.exec(io.Discard, "true") })
	report(t, "%d concurrent exec true\n  agent : %v wall, %d failures\n  direct: %v wall, %d failures\n  ratio : %.3f",
		conc, aw.Round(time.Millisecond), af, dw.Round(time.Millisecond), df, ratio(aw, dw))
	if af+df > 0 {
		t.Errorf("%d failures", af+df)
	}
}

//go:build bench

package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/internal/etcdtest"
	"github.com/gearboxd/gearbox/master/store"
	"github.com/gearboxd/gearbox/master/store/etcdstore"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Registry writes per second, etcd (3 members on loopback, data on the
// same disk) against bbolt (the baseline), under the same load: N writers,
// each marking its task changed and waiting until the change is durable,
// again and again. Their changes reach the store through a group commit
// that works as the master's persister does (master/persist.go: one
// writer takes every dirty entry's latest value and applies them in one
// Store.Apply, then wakes whoever waits), so a batch holds what changed
// while the previous one was written. Knobs (environment):
// GEARBOX_BENCH_REGISTRY_WRITERS (1,16,256), GEARBOX_BENCH_REGISTRY_SECONDS (5).
func TestBenchRegistryWrites(t *testing.T) {
	var writers []int
	for _, f := range strings.Split(envStr("GEARBOX_BENCH_REGISTRY_WRITERS", "1,16,256"), ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			writers = append(writers, n)
		}
	}
	d := time.Duration(envInt("GEARBOX_BENCH_REGISTRY_SECONDS", 5)) * time.Second
	c, err := etcdtest.Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	ctx := context.Background()
	et, err := etcdstore.Open(ctx, etcdstore.Config{Endpoints: c.Endpoints(), Prefix: "/bench/"})
	if err != nil {
		t.Fatal(err)
	}
	defer et.Close()
	bolt, err := store.OpenBolt(filepath.Join(t.TempDir(), "registry.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()

	var b strings.Builder
	fmt.Fprintf(&b, "registry writes, group commit, each writer waits for durability; %s per run, etcd 3 members on loopback:\n", d)
	for _, n := range writers {
		base := groupCommitLoad(t, bolt, n, d)
		e := groupCommitLoad(t, et, n, d)
		fmt.Fprintf(&b, "  %4d writers  bbolt: %s\n                etcd:  %s\n                etcd/bbolt writes/s: %.2f\n",
			n, base.line(), e.line(), e.rate/base.rate)
	}
	report(t, "%s", strings.TrimRight(b.String(), "\n"))
}

func envStr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

type writeLoad struct {
	rate, perBatch float64
	p50, p99       time.Duration
}

func (w writeLoad) line() string {
	return fmt.Sprintf("%8.0f writes/s  %6.1f per batch  latency p50 %s p99 %s", w.rate, w.perBatch, w.p50, w.p99)
}

// groupCommit is the master's persister reduced to tasks.
type groupCommit struct {
	st        store.Store
	mu        sync.Mutex
	cond      *sync.Cond
	dirty     map[string]store.Task
	gen, done uint64
	err       error
	wake      chan struct{}
	batches   int
}

func (g *groupCommit) mark(t store.Task) uint64 {
	g.mu.Lock()
	g.dirty[t.ID] = t
	g.gen++
	gen := g.gen
	g.mu.Unlock()
	select {
	case g.wake <- struct{}{}:
	default:
	}
	return gen
}

func (g *groupCommit) wait(gen uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.done < gen && g.err == nil {
		g.cond.Wait()
	}
	return g.err
}

func (g *groupCommit) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-g.wake:
		}
		g.mu.Lock()
		dirty, gen := g.dirty, g.gen
		g.dirty = map[string]store.Task{}
		g.mu.Unlock()
		var b store.Batch
		for _, t := range dirty {
			b.Tasks = append(b.Tasks, t)
		}
		err := g.st.Apply(ctx, b)
		g.mu.Lock()
		g.batches++
		if err != nil {
			g.err = err
		} else {
			g.done = gen
		}
		g.cond.Broadcast()
		g.mu.Unlock()
	}
}

// benchTask is a task as the master keeps it, with its container spec.
func benchTask(id string, n int) store.Task {
	now := time.Now().UTC()
	return store.Task{ID: id, AgentID: "a-" + id, Image: "localhost/demo:latest", Command: []string{"sleep", "3600"},
		Resources: store.Resources{CPUs: 0.1, Memory: 32 << 20}, State: typesv1.TaskState_TASK_RUNNING,
		Message: fmt.Sprintf("update %d", n), CreatedAt: now, UpdatedAt: now, FrameworkID: "fw-bench", Role: "web",
		Container: &store.Container{Spec: &agentv1.LaunchContainerRequest{ContainerId: id, Image: "localhost/demo:latest",
			Cmd: &agentv1.StringList{Values: []string{"sleep", "3600"}}, Env: []string{"A=1", "B=2"},
			Labels: map[string]string{"app": "bench"}, Resources: &agentv1.Resources{Cpus: 0.1, Memory: 32 << 20}}}}
}

func groupCommitLoad(t *testing.T, st store.Store, writers int, d time.Duration) writeLoad {
	g := &groupCommit{st: st, dirty: map[string]store.Task{}, wake: make(chan struct{}, 1)}
	g.cond = sync.NewCond(&g.mu)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.run(ctx) }()
	lat := make([][]time.Duration, writers)
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("t-%04d", w)
			for i := 0; time.Since(start) < d; i++ {
				t0 := time.Now()
				if errs[w] = g.wait(g.mark(benchTask(id, i))); errs[w] != nil {
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	cancel()
	<-done
	var all []time.Duration
	for w := range writers {
		if errs[w] != nil {
			t.Fatalf("writer %d: %v", w, errs[w])
		}
		all = append(all, lat[w]...)
	}
	return writeLoad{rate: float64(len(all)) / el.Seconds(), perBatch: float64(len(all)) / float64(max(g.batches, 1)),
		p50: pct(all, 50), p99: pct(all, 99)}
}

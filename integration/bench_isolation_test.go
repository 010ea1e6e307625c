//go:build bench

package integration

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

var limits = &agentv1.Resources{Cpus: 0.5, Memory: 64 << 20, Pids: 100, BlkioWeight: 500}

func launchWith(id string, res *agentv1.Resources) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := h.client.LaunchContainer(ctx, &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: []string{"/bin/true"}}, Resources: res,
	}); err != nil {
		return 0, err
	}
	if _, err := h.client.WaitContainer(ctx, &agentv1.WaitContainerRequest{ContainerId: id}); err != nil {
		return 0, err
	}
	if _, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: id}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// Launch latency with the four cgroups isolators on (and limits asked) vs
// an agent with --isolation "" (none), batches interleaved in one run.
func TestBenchIsolatorsOverhead(t *testing.T) {
	const rounds, batch = 4, 15
	var on, off []time.Duration
	for r := range rounds {
		for _, isolated := range []bool{false, true} {
			args := []string{"--isolation", ""}
			res := (*agentv1.Resources)(nil)
			if isolated {
				args, res = nil, limits
			}
			restartAgent(t, syscall.SIGTERM, args...)
			for i := range batch + 2 {
				d, err := launchWith(fmt.Sprintf("iso-%d-%v-%d", r, isolated, i), res)
				if err != nil {
					t.Fatal(err)
				}
				if i < 2 {
					continue // warm-up after the restart
				}
				if isolated {
					on = append(on, d)
				} else {
					off = append(off, d)
				}
			}
		}
	}
	restartAgent(t, syscall.SIGTERM)
	report(t, "launch /bin/true, %d each, batches interleaved\n  isolators on (cpu, mem, pids, blkio; limits asked): p50 %v p99 %v\n  isolators off (--isolation \"\"):                   p50 %v p99 %v\n  ratio p50 %.3f (target <= 1.10)",
		len(on), pct(on, 50), pct(on, 99), pct(off, 50), pct(off, 99), ratio(pct(on, 50), pct(off, 50)))
}

// GetContainerUsage for 100 running containers.
func TestBenchUsageOf100(t *testing.T) {
	const n = 100
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := fmt.Sprintf("usage-%d", i)
			if _, err := h.client.LaunchContainer(context.Background(), &agentv1.LaunchContainerRequest{
				ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: []string{"sleep", "3600"}},
				Resources: &agentv1.Resources{Memory: 8 << 20, Pids: 10},
			}); err != nil {
				t.Errorf("launch %s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i := range n {
			h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: fmt.Sprintf("usage-%d", i), Force: true})
		}
	})
	var times []time.Duration
	for range 7 {
		start := time.Now()
		resp, err := h.client.GetContainerUsage(ctxT(t), &agentv1.GetContainerUsageRequest{})
		if err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(start))
		if len(resp.Usages) < n {
			t.Fatalf("%d usages for %d containers", len(resp.Usages), n)
		}
	}
	report(t, "GetContainerUsage of %d running containers: p50 %v, worst %v (target <= 100ms)", n, pct(times, 50), pct(times, 100))
}

// How close to its --cpus 0.5 a busy loop runs (make test only checks the
// cap): 0.35-0.65 CPU-s/s on an idle machine.
func TestBenchCPULimit(t *testing.T) {
	launchRes(t, "bench-busy", &agentv1.Resources{Cpus: 0.5}, "sh", "-c", "while :; do :; done")
	time.Sleep(500 * time.Millisecond)
	c0, t0 := cpuSeconds(t, "bench-busy")
	time.Sleep(2500 * time.Millisecond)
	c1, t1 := cpuSeconds(t, "bench-busy")
	rate := (c1 - c0) / t1.Sub(t0).Seconds()
	t.Logf("busy loop under --cpus 0.5: %.3f CPU-seconds per second", rate)
	if rate < 0.35 || rate > 0.65 {
		t.Errorf("busy loop under --cpus 0.5 used %.3f CPU-s/s, want 0.35-0.65", rate)
	}
}

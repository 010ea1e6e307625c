//go:build bench

package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// 100 containers, each serving HTTP on its own loopback, each with an HTTP
// check every second: the agent's added CPU against the same 100
// containers without checks, in the same run (target <= 0.05 core), and
// how late checks start after their due time (p99, target <= 100 ms, from
// the agent's gearbox_checks_lateness_seconds histogram). The agent is
// built without the race detector for this, as it runs in production.
func TestBenchHealthChecks(t *testing.T) {
	n := 100
	if v, err := strconv.Atoi(os.Getenv("GEARBOX_BENCH_HEALTH_N")); err == nil && v > 0 {
		n = v // a quicker look
	}
	const window = 20 * time.Second
	useAgentWithoutRace(t)
	// Containers run on the host's network today (no CNI yet): each
	// serves on a port of its own.
	const basePort = 18000
	serve := func(i int) []string {
		return []string{"sh", "-c", fmt.Sprintf("mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 127.0.0.1:%d -h /www", basePort+i)}
	}
	launchAll := func(prefix string, check bool) {
		var wg sync.WaitGroup
		sem := make(chan struct{}, 8)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				id := fmt.Sprintf("%s-%d", prefix, i)
				var hc *typesv1.HealthCheck
				if check {
					hc = &typesv1.HealthCheck{Http: &typesv1.HTTPCheck{Port: uint32(basePort + i), Path: "/index.html"},
						Interval: hcDur(time.Second), Timeout: hcDur(time.Second), GracePeriod: hcDur(0), ConsecutiveFailures: 1000}
				}
				if _, err := h.client.LaunchContainer(context.Background(), &agentv1.LaunchContainerRequest{
					ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: serve(i)}, HealthCheck: hc,
				}); err != nil {
					t.Errorf("launch %s: %v", id, err)
				}
			}()
		}
		wg.Wait()
	}
	removeAll := func(prefix string) {
		for i := range n {
			h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: fmt.Sprintf("%s-%d", prefix, i), Force: true})
		}
	}
	pid := h.agentCmd.Process.Pid
	// measure is the agent's CPU over the window and the lateness
	// histogram's change in it.
	measure := func() (time.Duration, histogram) {
		time.Sleep(3 * time.Second) // let the launches' work settle
		h0, start := latenessHistogram(t), procCPU(pid)
		time.Sleep(window)
		cpu, h1 := procCPU(pid)-start, latenessHistogram(t)
		return cpu, h1.sub(h0)
	}

	launchAll("plain", false)
	t.Cleanup(func() { removeAll("plain") })
	base, _ := measure()
	removeAll("plain")
	time.Sleep(2 * time.Second) // their ports are free again

	launchAll("hc", true)
	t.Cleanup(func() { removeAll("hc") })
	deadline := time.Now().Add(2 * time.Minute)
	for healthy := 0; healthy < n; {
		resp, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		healthy = 0
		for _, c := range resp.Containers {
			if strings.HasPrefix(c.Id, "hc-") && c.Health == typesv1.HealthState_HEALTH_STATE_HEALTHY {
				healthy++
			}
		}
		if time.Now().After(deadline) {
			for _, c := range resp.Containers {
				t.Logf("%s: %s %s %q", c.Id, c.State, c.Health, c.HealthOutput)
			}
			t.Fatalf("%d of %d containers healthy after 2 minutes", healthy, n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	with, late := measure()
	runs := late.count
	p50, p99 := late.quantile(0.50), late.quantile(0.99)
	added := (with - base).Seconds() / window.Seconds()
	report(t, "health checks: %d containers, an HTTP check each every 1s, over %s: %.0f checks run (%.1f/s)\n"+
		"  agent CPU without checks %.3f core, with %.3f core: added %.3f core (target <= 0.05)\n"+
		"  lateness after the due time: p50 <= %s, p99 <= %s (histogram bucket bounds; target <= 100ms)",
		n, window, runs, runs/window.Seconds(), base.Seconds()/window.Seconds(), with.Seconds()/window.Seconds(), added, p50, p99)
	if added > 0.05 || p99 > 100*time.Millisecond {
		t.Errorf("over target: added CPU %.3f core, lateness p99 <= %s", added, p99)
	}
}

// useAgentWithoutRace restarts the harness's agent from a binary built
// without -race, and puts the race-built one back when the test ends.
func useAgentWithoutRace(t *testing.T) {
	t.Helper()
	plain := filepath.Join(h.dir, "bin-norace", "gearbox")
	cmd := exec.Command("go", "build", "-o", plain, "../cmd/gearbox")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building gearbox without -race: %v\n%s", err, out)
	}
	race := filepath.Join(h.bin, "gearbox")
	if err := os.Rename(race, race+".race"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(plain, race); err != nil {
		t.Fatal(err)
	}
	restartAgent(t, syscall.SIGTERM)
	t.Cleanup(func() {
		os.Remove(race)
		os.Rename(race+".race", race)
		restartAgent(t, syscall.SIGTERM)
	})
}

// histogram is a Prometheus histogram's cumulative buckets as scraped.
type histogram struct {
	bounds []float64
	counts []float64
	count  float64
}

func (a histogram) sub(b histogram) histogram {
	out := histogram{bounds: a.bounds, counts: make([]float64, len(a.counts)), count: a.count - b.count}
	for i := range a.counts {
		out.counts[i] = a.counts[i] - b.counts[i]
	}
	return out
}

// quantile is the upper bound of the bucket the q-quantile falls in.
func (a histogram) quantile(q float64) time.Duration {
	want := q * a.count
	for i, c := range a.counts {
		if c >= want {
			if math.IsInf(a.bounds[i], 1) {
				return time.Duration(math.MaxInt64)
			}
			return time.Duration(a.bounds[i] * float64(time.Second))
		}
	}
	return time.Duration(math.MaxInt64)
}

func latenessHistogram(t *testing.T) histogram {
	t.Helper()
	resp, err := http.Get("http://" + h.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var hg histogram
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, `gearbox_checks_lateness_seconds_bucket{le="`); ok {
			le, val, _ := strings.Cut(rest, `"} `)
			b, _ := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				b = math.Inf(1)
			}
			v, _ := strconv.ParseFloat(val, 64)
			hg.bounds, hg.counts = append(hg.bounds, b), append(hg.counts, v)
		}
		if rest, ok := strings.CutPrefix(line, "gearbox_checks_lateness_seconds_count "); ok {
			hg.count, _ = strconv.ParseFloat(rest, 64)
		}
	}
	if len(hg.bounds) == 0 {
		t.Fatal("the agent's metrics have no gearbox_checks_lateness_seconds")
	}
	return hg
}

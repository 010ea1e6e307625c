//go:build bench

package integration

import (
	"context"
	"fmt"
	"os"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Launch latency of /bin/true through the agent (LaunchContainer → exit seen
// by WaitContainer → RemoveContainer) against the direct containerd v2
// client (create → task → start → wait → delete) on the same image, same
// containerd, same run. The two are interleaved so that noise hits both.
func TestBenchLaunchLatency(t *testing.T) {
	direct := newDirect(t)
	const n = 100
	const warmup = 5
	var agentT, directT []time.Duration
	for i := range n + warmup {
		a, err := agentLaunch(fmt.Sprintf("bench-a-%d", i))
		if err != nil {
			t.Fatalf("agent launch %d: %v", i, err)
		}
		d, err := direct.launch(fmt.Sprintf("bench-d-%d", i))
		if err != nil {
			t.Fatalf("direct launch %d: %v", i, err)
		}
		if i >= warmup {
			agentT, directT = append(agentT, a), append(directT, d)
		}
	}
	ap50, ap99 := pct(agentT, 50), pct(agentT, 99)
	dp50, dp99 := pct(directT, 50), pct(directT, 99)
	report(t, "launch /bin/true, sequential, n=%d\n  agent : p50 %v  p99 %v\n  direct: p50 %v  p99 %v\n  ratio : p50 %.3f  p99 %.3f (target p50 <= 1.15)",
		n, ap50, ap99, dp50, dp99, ratio(ap50, dp50), ratio(ap99, dp99))
}

// 50 launches at concurrency 8 through each path.
func TestBenchLaunchThroughput(t *testing.T) {
	direct := newDirect(t)
	const total, conc = 50, 8
	run := func(name string, fn func(string) (time.Duration, error)) (float64, int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		failures := 0
		jobs := make(chan int)
		start := time.Now()
		for range conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					if _, err := fn(fmt.Sprintf("%s-%d", name, i)); err != nil {
						mu.Lock()
						failures++
						mu.Unlock()
						t.Logf("%s %d: %v", name, i, err)
					}
				}
			}()
		}
		for i := range total {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		return float64(total) / time.Since(start).Seconds(), failures
	}
	// Alternate the order over two rounds each so neither path always goes first.
	var aRate, dRate float64
	var aFail, dFail int
	for round := range 2 {
		r, f := run(fmt.Sprintf("tp-a%d", round), agentLaunch)
		aRate, aFail = aRate+r/2, aFail+f
		r, f = run(fmt.Sprintf("tp-d%d", round), direct.launch)
		dRate, dFail = dRate+r/2, dFail+f
	}
	report(t, "launch /bin/true, %d at concurrency %d (mean of 2 rounds)\n  agent : %.1f launches/s, %d failures\n  direct: %.1f launches/s, %d failures\n  ratio : %.3f (target >= 0.9)",
		total, conc, aRate, aFail, dRate, dFail, aRate/dRate)
	if aFail+dFail > 0 {
		t.Errorf("%d failures", aFail+dFail)
	}
}

func agentLaunch(id string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if _, err := h.client.LaunchContainer(ctx, &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: []string{"/bin/true"}},
	}); err != nil {
		return 0, err
	}
	w, err := h.client.WaitContainer(ctx, &agentv1.WaitContainerRequest{ContainerId: id})
	if err != nil {
		return 0, err
	}
	if w.Container.GetExitCode() != 0 {
		return 0, fmt.Errorf("exit %d", w.Container.GetExitCode())
	}
	if _, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: id}); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

type direct struct {
	c   *client.Client
	img client.Image
}

func newDirect(t *testing.T) *direct {
	c := h.ctrd(t)
	img, err := c.GetImage(namespaces.WithNamespace(context.Background(), h.namespace), "docker.io/"+testImage)
	if err != nil {
		img, err = c.GetImage(namespaces.WithNamespace(context.Background(), h.namespace), testImage)
	}
	if err != nil {
		t.Fatal(err)
	}
	return &direct{c: c, img: img}
}

// launch is what a careful direct client does: the same spec choices as
// the agent (host network, its own cgroup path, no-new-privileges and the
// default seccomp profile), output discarded.
func (d *direct) launch(id string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), h.namespace), time.Minute)
	defer cancel()
	start := time.Now()
	cont, err := d.c.NewContainer(ctx, id,
		client.WithImage(d.img),
		client.WithSnapshotter("overlayfs"),
		client.WithNewSnapshot(id, d.img),
		client.WithNewSpec(oci.WithImageConfig(d.img), oci.WithProcessArgs("/bin/true"),
			oci.WithHostNamespace(specs.NetworkNamespace), oci.WithCgroup("/"+h.namespace+"/"+id),
			oci.WithNoNewPrivileges, seccomp.WithDefaultProfile()),
	)
	if err != nil {
		return 0, err
	}
	task, err := cont.NewTask(ctx, cio.NullIO)
	if err != nil {
		return 0, err
	}
	ch, err := task.Wait(ctx)
	if err != nil {
		return 0, err
	}
	if err := task.Start(ctx); err != nil {
		return 0, err
	}
	st := <-ch
	if st.ExitCode() != 0 {
		return 0, fmt.Errorf("exit %d", st.ExitCode())
	}
	if _, err := task.Delete(ctx); err != nil {
		return 0, err
	}
	if err := cont.Delete(ctx, client.WithSnapshotCleanup); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)].Round(100 * time.Microsecond)
}

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }

func report(t *testing.T, format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	fmt.Fprintln(os.Stdout, msg)
	t.Log("\n" + msg)
}

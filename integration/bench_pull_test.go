//go:build bench

package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Pull at launch, measured against its baseline in the same run: a task
// whose image is absent (launch → TASK_RUNNING, the pull included) vs
// `ctr image pull` of the same kind of image followed by a task launch of
// the pulled image; and eight concurrent launches of one absent image vs
// a single launch with its pull.
func TestBenchPullAtLaunch(t *testing.T) {
	// The agent pulls in its own process; the baseline's ctr is built
	// without the race detector, so the agent is too (the harness's are
	// race-built).
	bin := filepath.Join(t.TempDir(), "gearbox")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/gearbox").CombinedOutput(); err != nil {
		t.Fatalf("building gearbox: %v\n%s", err, out)
	}
	clusterAgentBinary = bin
	t.Cleanup(func() { clusterAgentBinary = "" })
	m := startMasterProc(t)
	a := startClusterAgentWith(t, m, "benchpull", "rack:bp", false, "")
	id := a.agentID(t)
	ns := h.namespace + "-benchpull"
	auth := &agentv1.RegistryAuth{Username: regUser, Password: regPass}
	seq := 0
	launch := func(task, ref string) {
		t.Helper()
		if _, err := m.c.LaunchTask(context.Background(), &masterv1.LaunchTaskRequest{TaskId: task, AgentId: id,
			Container: &agentv1.LaunchContainerRequest{Image: ref, Cmd: &agentv1.StringList{Values: []string{"sleep", "600"}}, RegistryAuth: auth}}); err != nil {
			t.Fatal(err)
		}
	}
	// New content per image (GEARBOX_BENCH_PULL_LAYER_MB, 16 MiB): a small
	// service's layer.
	layer := int64(envInt("GEARBOX_BENCH_PULL_LAYER_MB", 16)) << 20
	fresh := func() string { seq++; return pushSized(t, fmt.Sprintf("gearbox/bench-%d:1", seq), layer) }
	const rounds = 5
	var withPull, baseline, ctrPull []time.Duration
	for i := range rounds {
		ref := fresh()
		start := time.Now()
		launch(fmt.Sprintf("pull-%d", i), ref)
		waitTaskState(t, m, fmt.Sprintf("pull-%d", i), typesv1.TaskState_TASK_RUNNING, time.Minute)
		withPull = append(withPull, time.Since(start))

		ref = fresh()
		start = time.Now()
		out, err := exec.Command("ctr", "--address", h.containerd.Address, "-n", ns, "image", "pull", "--plain-http",
			"--user", regUser+":"+regPass, ref).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr image pull: %v\n%s", err, out)
		}
		ctrPull = append(ctrPull, time.Since(start))
		launch(fmt.Sprintf("ctr-%d", i), ref)
		waitTaskState(t, m, fmt.Sprintf("ctr-%d", i), typesv1.TaskState_TASK_RUNNING, time.Minute)
		baseline = append(baseline, time.Since(start))
	}
	mp, mb := medianDur(withPull), medianDur(baseline)
	t.Logf("samples: launch with pull %v; ctr image pull %v; ctr image pull + launch %v", withPull, ctrPull, baseline)
	t.Logf("absent image, launch→TASK_RUNNING (median of %d): %s; ctr image pull + launch: %s; ratio %.2f (target ≤ 1.1)",
		rounds, mp, mb, float64(mp)/float64(mb))

	// Eight at once, through a counting proxy: one pull.
	proxy := startCountingProxy(t)
	pushSized(t, "gearbox/bench-single:1", layer)
	start := time.Now()
	launch("single", proxy.addr+"/gearbox/bench-single:1")
	waitTaskState(t, m, "single", typesv1.TaskState_TASK_RUNNING, time.Minute)
	one := time.Since(start)
	pushSized(t, "gearbox/bench-eight:1", layer)
	before := proxy.counts()
	start = time.Now()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() { launch(fmt.Sprintf("eight-%d", i), proxy.addr+"/gearbox/bench-eight:1") })
	}
	wg.Wait()
	for i := range 8 {
		waitTaskState(t, m, fmt.Sprintf("eight-%d", i), typesv1.TaskState_TASK_RUNNING, time.Minute)
	}
	eight := time.Since(start)
	fetched, twice := 0, 0
	for path, n := range proxy.counts() {
		if before[path] == 0 {
			fetched++
			if n > 1 {
				twice++
			}
		}
	}
	// What eight containers cost to start at once, the image present: on
	// a small machine that, not the pull, is most of the eight's time.
	start = time.Now()
	for i := range 8 {
		wg.Go(func() { launch(fmt.Sprintf("present-%d", i), proxy.addr+"/gearbox/bench-eight:1") })
	}
	wg.Wait()
	for i := range 8 {
		waitTaskState(t, m, fmt.Sprintf("present-%d", i), typesv1.TaskState_TASK_RUNNING, time.Minute)
	}
	present := time.Since(start)
	t.Logf("8 concurrent launches of one absent image: %s; one launch with a pull: %s; ratio %.2f (target ≤ 1.2); registry GETs: %d paths, %d fetched more than once",
		eight, one, float64(eight)/float64(one), fetched, twice)
	t.Logf("8 concurrent launches of the image once present: %s; so the eight's pull took %s, the single's %s (launch of a present image: %s)",
		present, eight-present, one-medianDur(baseline)+medianDur(ctrPull), medianDur(baseline)-medianDur(ctrPull))
	if twice > 0 {
		t.Errorf("%d manifests or blobs were fetched more than once: launches did not share one pull", twice)
	}
}

func medianDur(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

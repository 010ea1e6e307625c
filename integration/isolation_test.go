package integration

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func launchRes(t *testing.T, id string, res *agentv1.Resources, args ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: args}, Resources: res,
	})
	if err != nil {
		t.Fatalf("launch %s: %v", id, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

// allocate64M makes the container ask for 64 MiB at once.
const allocate64M = "dd if=/dev/zero of=/dev/null bs=64M count=1"

func wantMemoryLimitation(t *testing.T, id string) {
	t.Helper()
	w := waitExit(t, id, time.Minute)
	if w.State != typesv1.TaskState_TASK_FAILED || w.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_MEMORY ||
		!strings.Contains(w.Message, "32.0 MiB") || !strings.Contains(w.Message, "peak") {
		t.Errorf("%s: %v %v %q (exit %d)", id, w.State, w.Reason, w.Message, w.GetExitCode())
	}
}

func TestMemoryLimitKills(t *testing.T) {
	r := h.cli("run", "--name", "oom", "--memory", "32m", testImage, "sh", "-c", allocate64M)
	t.Cleanup(func() { h.cli("rm", "-f", "oom") })
	if r.code != 137 {
		t.Errorf("run under 32m allocating 64m: %s", r)
	}
	wantMemoryLimitation(t, "oom")
	if r := h.cli("inspect", "oom"); !strings.Contains(r.stdout, "REASON_CONTAINER_LIMITATION_MEMORY") || !strings.Contains(r.stdout, "Memory:        32.0 MiB") {
		t.Errorf("inspect:\n%s", r.stdout)
	}
}

// The kill happens while the agent is stopped; the agent started after it
// still says why.
func TestMemoryLimitKillWhileAgentDown(t *testing.T) {
	launchRes(t, "oom-down", &agentv1.Resources{Memory: 32 << 20}, "sh", "-c", "sleep 2; "+allocate64M)
	if err := h.stopAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	wantMemoryLimitation(t, "oom-down")
}

func cpuSeconds(t *testing.T, id string) (float64, time.Time) {
	t.Helper()
	resp, err := h.client.GetContainerUsage(ctxT(t), &agentv1.GetContainerUsageRequest{ContainerIds: []string{id}})
	if err != nil || len(resp.Usages) != 1 {
		t.Fatalf("usage of %s: %v", id, err)
	}
	u := resp.Usages[0]
	return u.CpuUserSeconds + u.CpuSystemSeconds, u.Timestamp.AsTime()
}

// --cpus 0.5 is a cap: the kernel's quota is 50 ms per 100 ms, a busy loop
// never gets more than half a CPU (a busy machine may give it less: how
// close to 0.5 it gets is TestBenchCPULimit's), and it is throttled.
func TestCPULimit(t *testing.T) {
	launchRes(t, "busy", &agentv1.Resources{Cpus: 0.5}, "sh", "-c", "while :; do :; done")
	if q, ok := cgroupValue("busy", "cpu", "cpu.cfs_quota_us", "cpu.max"); !ok || (q != "50000" && q != "50000 100000") {
		t.Errorf("cpu quota in the cgroup: %q, want 50000 of 100000", q)
	}
	if p, ok := cgroupValue("busy", "cpu", "cpu.cfs_period_us", ""); ok && p != "100000" {
		t.Errorf("cpu.cfs_period_us: %q, want 100000", p)
	}
	c0, t0 := cpuSeconds(t, "busy")
	time.Sleep(2500 * time.Millisecond)
	c1, t1 := cpuSeconds(t, "busy")
	rate := (c1 - c0) / t1.Sub(t0).Seconds()
	t.Logf("busy loop under --cpus 0.5: %.3f CPU-seconds per second", rate)
	// One period's quota of slack for where the two readings fall.
	if rate <= 0 || rate > 0.5+0.05/t1.Sub(t0).Seconds()+0.02 {
		t.Errorf("busy loop under --cpus 0.5 used %.3f CPU-s/s, want at most 0.5", rate)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := h.client.GetContainerUsage(ctxT(t), &agentv1.GetContainerUsageRequest{ContainerIds: []string{"busy"}})
		if err == nil && resp.Usages[0].CpuThrottledPeriods > 0 && resp.Usages[0].CpuThrottledSeconds > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no throttled periods reported within a minute of a busy loop: %v %v", resp, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// cgroupValue reads a container's cgroup file, v1 (under the controller's
// hierarchy) or v2; v2file "" means the file has no v2 counterpart.
func cgroupValue(id, v1controller, v1file, v2file string) (string, bool) {
	if b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", v1controller, h.namespace, id, v1file)); err == nil {
		return strings.TrimSpace(string(b)), true
	}
	if v2file == "" {
		return "", false
	}
	b, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", h.namespace, id, v2file))
	return strings.TrimSpace(string(b)), err == nil
}

func TestPidsLimit(t *testing.T) {
	// The loop runs in a subshell: ash exits when a fork fails, and the
	// container's first process must outlive the bomb.
	launchRes(t, "forky", &agentv1.Resources{Pids: 20}, "sh", "-c", "(while :; do sleep 30 & done) 2>/dev/null; exec sleep 30")
	max := uint64(0)
	for range 20 {
		resp, err := h.client.GetContainerUsage(ctxT(t), &agentv1.GetContainerUsageRequest{ContainerIds: []string{"forky"}})
		if err != nil {
			t.Fatal(err)
		}
		u := resp.Usages[0]
		if u.PidsLimit != 20 {
			t.Fatalf("pids limit %d", u.PidsLimit)
		}
		max = maxU(max, u.Pids)
		time.Sleep(50 * time.Millisecond)
	}
	if max > 20 || max < 15 {
		t.Errorf("fork loop under --pids 20 reached %d processes", max)
	}
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// Raising a running container's memory limit lets it allocate more, and
// the cgroup shows the new limit.
func TestUpdateMemoryInPlace(t *testing.T) {
	c := launchRes(t, "grow", &agentv1.Resources{Memory: 32 << 20, Cpus: 1},
		"sh", "-c", "while [ ! -e /mnt/sandbox/go ]; do sleep 0.1; done; "+allocate64M)
	r := h.cli("update", "--memory", "128m", "--cpus", "1.5", "grow")
	if r.code != 0 {
		t.Fatal(r)
	}
	limit, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/memory", h.namespace, "grow", "memory.limit_in_bytes"))
	if err == nil && strings.TrimSpace(string(limit)) != strconv.Itoa(128<<20) {
		t.Errorf("memory.limit_in_bytes is %s after update", limit)
	}
	if quota, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpu", h.namespace, "grow", "cpu.cfs_quota_us")); err == nil && strings.TrimSpace(string(quota)) != "150000" {
		t.Errorf("cpu.cfs_quota_us is %s after update", quota)
	}
	os.WriteFile(filepath.Join(c.Sandbox, "go"), nil, 0o644)
	if w := waitExit(t, "grow", time.Minute); w.GetExitCode() != 0 {
		t.Errorf("after raising the limit: %v %v %q exit %d", w.State, w.Reason, w.Message, w.GetExitCode())
	}
	if r := h.cli("inspect", "grow"); !strings.Contains(r.stdout, "128.0 MiB") {
		t.Errorf("inspect after update:\n%s", r.stdout)
	}
}

func TestStatsCLI(t *testing.T) {
	launchRes(t, "watched", &agentv1.Resources{Memory: 64 << 20, Pids: 50}, "sleep", "300")
	r := h.cli("stats", "--no-stream", "watched")
	if r.code != 0 || !strings.Contains(r.stdout, "watched") || !strings.Contains(r.stdout, "64.0 MiB") || !strings.Contains(r.stdout, "/ 50") {
		t.Errorf("stats --no-stream:\n%s", r)
	}
	if r := h.cli("inspect", "watched"); !strings.Contains(r.stdout, "Memory used:") || !strings.Contains(r.stdout, "Pids:") {
		t.Errorf("inspect lacks usage:\n%s", r.stdout)
	}
	if r := h.cli("stats", "-o", "json", "watched"); !strings.Contains(r.stdout, `"memory_limit": "67108864"`) {
		t.Errorf("stats -o json:\n%s", r.stdout)
	}
}

func TestResourceValuesRefused(t *testing.T) {
	for _, tc := range []struct {
		res *agentv1.Resources
		msg string
	}{
		{&agentv1.Resources{Cpus: -1}, "cpus"},
		{&agentv1.Resources{Memory: 1 << 20}, "4 MiB"},
		{&agentv1.Resources{Memory: 1 << 50}, "more than this host has"},
		{&agentv1.Resources{Pids: -3}, "pids"},
		{&agentv1.Resources{BlkioWeight: 5}, "10 to 1000"},
	} {
		_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}, Resources: tc.res})
		wantCode(t, err, codes.InvalidArgument, tc.msg)
	}
	for _, args := range [][]string{{"--cpus", "abc"}, {"--cpus", "-1"}, {"--memory", "lots"}} {
		r := h.cli(append(append([]string{"run", "--rm"}, args...), testImage, "true")...)
		if r.code != 125 || !strings.Contains(r.stderr, args[0]) {
			t.Errorf("run %v: %s", args, r)
		}
	}
	out, err := h.agentFails("--isolation", "cgroups/cpu,cgroups/nope")
	if err != nil || !strings.Contains(out, `unknown isolator "cgroups/nope"`) {
		t.Errorf("unknown isolator: %v\n%s", err, out)
	}
	_, err = h.client.UpdateContainer(ctxT(t), &agentv1.UpdateContainerRequest{ContainerId: "ghost", Resources: &agentv1.Resources{Cpus: 1}})
	wantCode(t, err, codes.NotFound, "ghost")
}

// The agent offers what its config says, reports what is allocated and
// free, and refuses a launch that does not fit, with the numbers.
func TestAgentResources(t *testing.T) {
	st, err := h.client.GetState(ctxT(t), &agentv1.GetStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Total.Cpus != 2 || st.Total.Memory != 2048<<20 || st.Total.Disk <= 0 || st.Attributes["rack"] != "r1" || st.Attributes["zone"] != "a" {
		t.Errorf("state: total %v attributes %v", st.Total, st.Attributes)
	}
	launchRes(t, "big", &agentv1.Resources{Cpus: 1.5, Memory: 1024 << 20}, "sleep", "300")
	st, _ = h.client.GetState(ctxT(t), &agentv1.GetStateRequest{})
	if st.Allocated.Cpus != 1.5 || st.Free.Cpus != 0.5 || st.Free.Memory != 1024<<20 {
		t.Errorf("after a launch: allocated %v free %v", st.Allocated, st.Free)
	}
	_, err = h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}, Resources: &agentv1.Resources{Cpus: 1}})
	wantCode(t, err, codes.FailedPrecondition, "cpus: asked 1, free 0.5 of 2 (allocated 1.5)")
	if r := h.cli("info"); !strings.Contains(r.stdout, "Free:         cpus 0.5") || !strings.Contains(r.stdout, "rack:r1") {
		t.Errorf("gearbox info:\n%s", r.stdout)
	}
	h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "big", Force: true})
	launchRes(t, "fits-now", &agentv1.Resources{Cpus: 1}, "true")
}

// The example isolator plugin: its effect is visible inside the container,
// its limit ends a container, and a required plugin that is down fails
// launches with REASON_CONTAINER_LAUNCH_FAILED and its name until it is
// back.
func TestIsolatorPlugin(t *testing.T) {
	if r := h.cli("run", "--rm", testImage, "sh", "-c", "echo $GEARBOX_DISK_QUOTA"); r.stdout != "67108864\n" {
		t.Errorf("the plugin's env inside the container: %s", r)
	}
	r := h.cli("run", "-d", "--name", "filler", "-l", "disk-quota=1m", testImage, "sh", "-c", "dd if=/dev/zero of=/mnt/sandbox/fill bs=1M count=4; sleep 60")
	if r.code != 0 {
		t.Fatal(r)
	}
	t.Cleanup(func() { h.cli("rm", "-f", "filler") })
	w := waitExit(t, "filler", 30*time.Second)
	if w.State != typesv1.TaskState_TASK_FAILED || w.Reason != typesv1.Reason_REASON_CONTAINER_LIMITATION_DISK || !strings.Contains(w.Message, "disk-quota") {
		t.Errorf("over its disk quota: %v %v %q", w.State, w.Reason, w.Message)
	}

	h.stopPlugin()
	defer func() {
		if h.pluginCmd == nil {
			h.startPlugin()
		}
	}()
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "unplugged", Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}})
	wantCode(t, err, codes.FailedPrecondition, `isolator plugin "disk-quota" (required) failed`)
	if c := inspect(t, "unplugged"); c.Reason != typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED || !strings.Contains(c.Message, "disk-quota") {
		t.Errorf("launch with the plugin down: %v %q", c.Reason, c.Message)
	}
	h.cli("rm", "unplugged")
	if err := h.startPlugin(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := h.cli("run", "--rm", testImage, "echo", "reconnected")
		if r.stdout == "reconnected\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no launch within 20s of the plugin's return: %s", r)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

package integration

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/pkg/namespaces"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Promises of the README that no other test checks against the real agent.

// metrics scrapes the agent's /metrics and returns each sample's value by
// its name and labels, as written ("name{label=\"v\"}").
func metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + h.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, m := range regexp.MustCompile(`(?m)^(gearbox_[^ ]+) (\S+)$`).FindAllStringSubmatch(string(body), -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err == nil {
			out[m[1]] = v
		}
	}
	return out
}

// "Prometheus metrics: launches, their duration, containers by state,
// recovery time".
func TestMetricsOfLaunchesContainersAndRecovery(t *testing.T) {
	before := metrics(t)
	launch(t, "metered", "sleep", "300")
	// Created, but its process cannot start: a failed launch.
	h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "metered-fails", Image: testImage,
		Cmd: &agentv1.StringList{Values: []string{"/no/such/binary"}}})
	t.Cleanup(func() {
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: "metered-fails", Force: true})
	})
	after := metrics(t)
	for _, c := range []struct {
		name string
		min  float64
	}{
		{`gearbox_containerizer_launches_total{result="ok"}`, 1},
		{`gearbox_containerizer_launches_total{result="failed"}`, 1},
		{`gearbox_containerizer_launch_duration_seconds_count`, 1},
	} {
		if d := after[c.name] - before[c.name]; d < c.min {
			t.Errorf("%s went from %v to %v after one such launch", c.name, before[c.name], after[c.name])
		}
	}
	if after[`gearbox_containerizer_launch_duration_seconds_sum`] <= before[`gearbox_containerizer_launch_duration_seconds_sum`] {
		t.Errorf("launch duration sum did not grow: %v", after[`gearbox_containerizer_launch_duration_seconds_sum`])
	}
	if n := after[`gearbox_containerizer_containers{state="TASK_RUNNING"}`]; n < 1 {
		t.Errorf("containers running: %v, want at least the one just launched", n)
	}
	if n := after[`gearbox_containerizer_containers{state="TASK_FAILED"}`]; n < 1 {
		t.Errorf("containers failed: %v, want at least the one that failed to launch", n)
	}
	if v, ok := after["gearbox_agent_recovery_duration_seconds"]; !ok || v <= 0 {
		t.Errorf("gearbox_agent_recovery_duration_seconds = %v (present %v), want the last recovery's duration", v, ok)
	}
}

// "cpu (weight and a CFS hard limit), memory (hard and soft, no swap), pids
// and blkio/io": what the runtime was given, and what the kernel enforces
// where this host has the file.
func TestCgroupLimitsOfALaunch(t *testing.T) {
	res := &agentv1.Resources{Cpus: 0.5, Memory: 64 << 20, MemorySoft: 32 << 20, Pids: 30, BlkioWeight: 500}
	launchRes(t, "limited", res, "sleep", "300")
	ctx := namespaces.WithNamespace(ctxT(t), h.namespace)
	cont, err := h.ctrd(t).LoadContainer(ctx, "limited")
	if err != nil {
		t.Fatal(err)
	}
	spec, err := cont.Spec(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := spec.Linux.Resources
	switch {
	case r == nil || r.CPU == nil || r.Memory == nil || r.Pids == nil || r.BlockIO == nil:
		t.Fatalf("the runtime's spec lacks limits: %+v", r)
	case r.CPU.Shares == nil || *r.CPU.Shares != 512:
		t.Errorf("cpu shares in the spec: %v, want 512", r.CPU.Shares)
	case r.Memory.Reservation == nil || *r.Memory.Reservation != 32<<20:
		t.Errorf("memory reservation in the spec: %v, want 32 MiB", r.Memory.Reservation)
	case r.BlockIO.Weight == nil || *r.BlockIO.Weight != 500:
		t.Errorf("blkio weight in the spec: %v, want 500", r.BlockIO.Weight)
	}
	// The kernel's view. cpu.weight on v2 is runc's conversion of 512 shares.
	for _, c := range []struct {
		v1ctl, v1file, v2file, want1, want2 string
	}{
		{"cpu", "cpu.shares", "cpu.weight", "512", "20"},
		{"memory", "memory.limit_in_bytes", "memory.max", "67108864", "67108864"},
		{"memory", "memory.soft_limit_in_bytes", "memory.low", "33554432", "33554432"},
		{"pids", "pids.max", "pids.max", "30", "30"},
	} {
		got, ok := cgroupValue("limited", c.v1ctl, c.v1file, c.v2file)
		if !ok || (got != c.want1 && got != c.want2) {
			t.Errorf("%s/%s: %q (found %v), want %s", c.v1file, c.v2file, got, ok, c.want1)
		}
	}
	// No swap: memory+swap is the memory limit (v1, where swap is
	// accounted), or no swap at all (v2).
	if got, ok := cgroupValue("limited", "memory", "memory.memsw.limit_in_bytes", ""); ok && got != "67108864" {
		t.Errorf("memory.memsw.limit_in_bytes = %s, want the memory limit (no swap)", got)
	}
	if got, err := os.ReadFile(filepath.Join("/sys/fs/cgroup", h.namespace, "limited", "memory.swap.max")); err == nil && strings.TrimSpace(string(got)) != "0" {
		t.Errorf("memory.swap.max = %s, want 0", got)
	}
	// The io weight where the host's scheduler offers one (none on hosts
	// without BFQ or CFQ: the spec above is then all there is).
	for _, f := range []string{"blkio.weight", "blkio.bfq.weight"} {
		if got, ok := cgroupValue("limited", "blkio", f, ""); ok && !strings.Contains(got, "500") {
			t.Errorf("%s = %q, want 500", f, got)
		}
	}
}

// "sandbox (unbounded, as Mesos)": one file per stream, never rotated.
func TestSandboxLoggerIsUnbounded(t *testing.T) {
	const lines = 60000 // ~350 KiB: past any rotation size a test would use
	c := launchLogged(t, "unbounded", &agentv1.LogOptions{Driver: "sandbox"}, "seq", strconv.Itoa(lines))
	if w := waitExit(t, "unbounded", 2*time.Minute); w.GetExitCode() != 0 {
		t.Fatalf("seq: %v %q", w.State, w.Message)
	}
	out, err := os.ReadFile(filepath.Join(c.Sandbox, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(got) != lines || got[0] != "1" || got[lines-1] != strconv.Itoa(lines) {
		t.Errorf("the sandbox's stdout has %d lines, want 1..%d", len(got), lines)
	}
	entries, _ := os.ReadDir(c.Sandbox)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "stdout.") || strings.HasPrefix(e.Name(), "stderr.") {
			t.Errorf("the sandbox logger rotated: %s", e.Name())
		}
	}
	if l := inspect(t, "unbounded").Log; l.GetDriver() != "sandbox" {
		t.Errorf("the container's logger: %v, want sandbox", l)
	}
}

// "drop back-pressure": a logger that cannot write does not hold the
// container up; what did not fit is dropped and the log says how much.
func TestDropModeDropsInsteadOfBlocking(t *testing.T) {
	const lines = 400000 // ~2.7 MB, more than drop mode's 1 MiB buffer
	c := launchLogged(t, "dropper", &agentv1.LogOptions{Driver: "logrotate", Mode: "drop"}, "sh", "-c",
		"while [ ! -e /mnt/sandbox/go ]; do sleep 0.1; done; seq 1 "+strconv.Itoa(lines)+"; echo finished >&2; "+
			"while [ ! -e /mnt/sandbox/go2 ]; do sleep 0.1; done; echo after")
	stdout := filepath.Join(c.Sandbox, "stdout")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Lstat(stdout); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the logger did not create the sandbox's stdout within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An immutable file refuses the logger's writes (EPERM), as a full or
	// broken disk would, until the flag is cleared.
	if out, err := exec.Command("chattr", "+i", stdout).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i (the test needs a file system with attributes, e.g. ext4): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", stdout).Run() })
	os.WriteFile(filepath.Join(c.Sandbox, "go"), nil, 0o644)
	// In block mode the container would wait on its stdout forever.
	deadline = time.Now().Add(time.Minute)
	for {
		if b, _ := os.ReadFile(filepath.Join(c.Sandbox, "stderr")); strings.Contains(string(b), "finished") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the container did not get past its output within a minute while its logger could not write: drop mode blocked it")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if out, err := exec.Command("chattr", "-i", stdout).CombinedOutput(); err != nil {
		t.Fatalf("chattr -i: %v %s", err, out)
	}
	// The logger retries each second and then writes what it queued; a
	// line written before that is done is (rightly) dropped too, so the
	// last line comes once the file has stopped growing for 2 s.
	var size int64 = -1
	for stable := 0; stable < 20; time.Sleep(100 * time.Millisecond) {
		fi, err := os.Stat(stdout)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 0 && fi.Size() == size {
			stable++
		} else {
			stable, size = 0, fi.Size()
		}
	}
	os.WriteFile(filepath.Join(c.Sandbox, "go2"), nil, 0o644)
	if w := waitExit(t, "dropper", 2*time.Minute); w.GetExitCode() != 0 {
		t.Fatalf("dropper: %v %q", w.State, w.Message)
	}
	var out []byte
	deadline = time.Now().Add(30 * time.Second)
	for {
		out, _ = os.ReadFile(stdout)
		if strings.HasSuffix(string(out), "after\n") || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	m := regexp.MustCompile(`\[gearbox-logger: dropped (\d+) bytes\]`).FindSubmatch(out)
	if m == nil || string(m[1]) == "0" {
		t.Fatalf("no record of dropped bytes in stdout (%d bytes, ends %q)", len(out), out[max(0, len(out)-80):])
	}
	if n := strings.Count(string(out), "\n"); n >= lines {
		t.Errorf("stdout has %d lines: nothing was dropped", n)
	}
	if !strings.HasSuffix(string(out), "after\n") {
		t.Errorf("what came after the drop is missing: ends %q", out[max(0, len(out)-80):])
	}
}

// "a container of another image in the target's pid, network and IPC
// namespaces".
func TestDebugContainerSharesNetworkAndIPC(t *testing.T) {
	target := launch(t, "debug-ns", "sleep", "300")
	r := h.cli("debug", "--image", testImage, "debug-ns", "sh", "-c", "for ns in net ipc pid; do readlink /proc/self/ns/$ns; done")
	if r.code != 0 {
		t.Fatal(r)
	}
	got := strings.Fields(r.stdout)
	if len(got) != 3 {
		t.Fatalf("debug container's namespaces: %q", r.stdout)
	}
	self, _ := os.Readlink("/proc/self/ns/ipc")
	for i, ns := range []string{"net", "ipc", "pid"} {
		want, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(int(target.Pid)), "ns", ns))
		if err != nil {
			t.Fatal(err)
		}
		if got[i] != want {
			t.Errorf("debug container's %s namespace %s, the target's %s", ns, got[i], want)
		}
	}
	if got[1] == self {
		t.Errorf("the debug container shares the host's IPC namespace %s", self)
	}
}

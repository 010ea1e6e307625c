package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/gearboxd/gearbox/checks"
	"github.com/gearboxd/gearbox/internal/demoimage"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// healthImage is the test image with a Docker HEALTHCHECK in its config:
// healthy while /tmp/healthy exists.
const healthImage = "localhost/gearbox-health:1"

var (
	healthTarOnce sync.Once
	healthTar     string
	healthTarErr  error
)

// healthImageTar writes (once) a docker-archive of healthImage.
func healthImageTar(t *testing.T) string {
	t.Helper()
	healthTarOnce.Do(func() {
		cf, err := h.img.ConfigFile()
		if err != nil {
			healthTarErr = err
			return
		}
		cf = cf.DeepCopy()
		cf.Config.Healthcheck = &v1.HealthConfig{Test: []string{"CMD-SHELL", "test -f /tmp/healthy"},
			Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond, Retries: 2}
		img, err := mutate.ConfigFile(h.img, cf)
		if err != nil {
			healthTarErr = err
			return
		}
		healthTar = filepath.Join(h.dir, "image-health.tar")
		healthTarErr = writeFile(healthTar, func(f *os.File) error { return demoimage.WriteDockerArchive(f, img, healthImage) })
	})
	if healthTarErr != nil {
		t.Fatal(healthTarErr)
	}
	return healthTar
}

func hcDur(x time.Duration) *durationpb.Duration { return durationpb.New(x) }

// launchChecked launches a container of img running args with a check.
func launchChecked(t *testing.T, id string, hc *typesv1.HealthCheck, args ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: args}, HealthCheck: hc,
		KillPolicy: &typesv1.KillPolicy{GracePeriod: hcDur(time.Second)},
	})
	if err != nil {
		t.Fatalf("launch %s: %v", id, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

// waitHealth polls until container id's health is want.
func waitHealth(t *testing.T, id string, want typesv1.HealthState) *agentv1.Container {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c := inspect(t, id)
		if c.Health == want {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("container %s: health %s (%q), state %s; want %s", id, c.Health, c.HealthOutput, c.State, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func execIn(t *testing.T, id string, args ...string) {
	t.Helper()
	if r := h.cli(append([]string{"exec", id}, args...)...); r.code != 0 {
		t.Fatalf("exec %v in %s: %s", args, id, r)
	}
}

// An HTTP check against busybox httpd: unhealthy once the served file is gone, healthy again
// once it is back; ps and inspect show it.
func TestHealthHTTPFollowsTheServedFile(t *testing.T) {
	port, err := freePort() // containers share the host's network until they get their own
	if err != nil {
		t.Fatal(err)
	}
	launchChecked(t, "hc-http", &typesv1.HealthCheck{
		Http: &typesv1.HTTPCheck{Port: uint32(port), Path: "/index.html"}, Interval: hcDur(300 * time.Millisecond),
		GracePeriod: hcDur(0), ConsecutiveFailures: 1000,
	}, "sh", "-c", fmt.Sprintf("mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 127.0.0.1:%d -h /www", port))
	c := waitHealth(t, "hc-http", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	if !strings.Contains(c.HealthOutput, "200") || c.HealthCheckedAt == nil {
		t.Errorf("healthy: output %q checked at %v", c.HealthOutput, c.HealthCheckedAt)
	}
	if r := h.cli("ps"); !strings.Contains(r.stdout, "(healthy)") {
		t.Errorf("ps does not show the health:\n%s", r.stdout)
	}
	execIn(t, "hc-http", "rm", "/www/index.html")
	c = waitHealth(t, "hc-http", typesv1.HealthState_HEALTH_STATE_UNHEALTHY)
	if !strings.Contains(c.HealthOutput, "404") || c.HealthFailures == 0 {
		t.Errorf("unhealthy: output %q failures %d", c.HealthOutput, c.HealthFailures)
	}
	if r := h.cli("inspect", "hc-http"); !strings.Contains(r.stdout, "unhealthy") || !strings.Contains(r.stdout, "404") {
		t.Errorf("inspect does not show the health:\n%s", r.stdout)
	}
	execIn(t, "hc-http", "sh", "-c", "echo ok > /www/index.html")
	waitHealth(t, "hc-http", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	if c := inspect(t, "hc-http"); c.State != typesv1.TaskState_TASK_RUNNING {
		t.Errorf("state %s, want it running: it never reached consecutive_failures", c.State)
	}
}

// A TCP check on an nc -l loop, from the CLI's flags.
func TestHealthTCPOnAnNcLoop(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	r := h.cli("run", "-d", "--name", "hc-tcp", "--health-tcp", fmt.Sprint(port), "--health-interval", "300ms", "--health-start-period", "0s",
		testImage, "sh", "-c", fmt.Sprintf("while true; do nc -l -p %d </dev/null; done", port))
	t.Cleanup(func() {
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: "hc-tcp", Force: true})
	})
	if r.code != 0 {
		t.Fatal(r)
	}
	c := waitHealth(t, "hc-tcp", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	if !strings.Contains(c.HealthOutput, fmt.Sprintf("connected to 127.0.0.1:%d", port)) {
		t.Errorf("output %q", c.HealthOutput)
	}
}

// A COMMAND check runs in the container; consecutive_failures failed checks
// kill it with its kill policy (SIGTERM, which the trap turns into 143) and
// it ends TASK_KILLED with the check's reason and last output.
func TestHealthCommandFailuresKillTheContainer(t *testing.T) {
	launchChecked(t, "hc-cmd", &typesv1.HealthCheck{
		Command:  []string{"sh", "-c", "test -f /tmp/ok || { echo no ok file; exit 1; }"},
		Interval: hcDur(200 * time.Millisecond), GracePeriod: hcDur(0), ConsecutiveFailures: 3,
	}, "sh", "-c", `touch /tmp/ok; trap "exit 143" TERM; while true; do sleep 1; done`)
	waitHealth(t, "hc-cmd", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	execIn(t, "hc-cmd", "rm", "/tmp/ok")
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "hc-cmd"})
	if err != nil {
		t.Fatal(err)
	}
	c := w.Container
	if c.State != typesv1.TaskState_TASK_KILLED || c.Reason != typesv1.Reason_REASON_TASK_UNHEALTHY ||
		!strings.Contains(c.Message, "no ok file") || !strings.Contains(c.Message, "3 failed health checks") {
		t.Errorf("after failing its check: %s %s %q", c.State, c.Reason, c.Message)
	}
	if c.GetExitCode() != 143 {
		t.Errorf("exit %d, want 143: the kill policy's SIGTERM first", c.GetExitCode())
	}
}

// Failures during the grace period do not count: a check that always
// fails kills the container only once the grace period is over.
func TestHealthGracePeriodIsRespected(t *testing.T) {
	const grace = 2 * time.Second
	launchChecked(t, "hc-grace", &typesv1.HealthCheck{
		Command: []string{"false"}, Interval: hcDur(200 * time.Millisecond), GracePeriod: hcDur(grace), ConsecutiveFailures: 1,
	}, "sleep", "600")
	c := waitHealth(t, "hc-grace", typesv1.HealthState_HEALTH_STATE_STARTING)
	if c.HealthFailures != 0 {
		t.Errorf("failures counted in the grace period: %d", c.HealthFailures)
	}
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "hc-grace"})
	if err != nil {
		t.Fatal(err)
	}
	c = w.Container
	if c.Reason != typesv1.Reason_REASON_TASK_UNHEALTHY {
		t.Fatalf("ended %s %s %q", c.State, c.Reason, c.Message)
	}
	if ran := c.FinishedAt.AsTime().Sub(c.StartedAt.AsTime()); ran < grace {
		t.Errorf("killed %v after its start, within its %v grace period", ran, grace)
	}
}

// The image's own HEALTHCHECK runs unless --no-healthcheck.
func TestHealthImageHealthcheck(t *testing.T) {
	if err := h.cliImport(healthImageTar(t)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"hc-image", "hc-image-off"} {
		args := []string{"run", "-d", "--name", id}
		if id == "hc-image-off" {
			args = append(args, "--no-healthcheck")
		}
		if r := h.cli(append(args, healthImage, "sh", "-c", "touch /tmp/healthy; exec sleep 600")...); r.code != 0 {
			t.Fatal(r)
		}
		t.Cleanup(func() {
			h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
		})
	}
	waitHealth(t, "hc-image", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	time.Sleep(time.Second) // the image's interval is 200ms: checks would have run
	if c := inspect(t, "hc-image-off"); c.Health != typesv1.HealthState_HEALTH_STATE_UNSPECIFIED {
		t.Errorf("--no-healthcheck: health %s", c.Health)
	}
	// Retries 2: two failures in a row kill it.
	execIn(t, "hc-image", "rm", "/tmp/healthy")
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "hc-image"})
	if err != nil || w.Container.Reason != typesv1.Reason_REASON_TASK_UNHEALTHY {
		t.Errorf("image check failing: %v %v", w, err)
	}
}

// Checks are validated at launch: InvalidArgument naming the field.
func TestHealthCheckValidation(t *testing.T) {
	cases := []struct {
		hc    *typesv1.HealthCheck
		field string
	}{
		{&typesv1.HealthCheck{Command: []string{"true"}, Interval: hcDur(time.Second), Timeout: hcDur(5 * time.Second)}, "health_check.timeout"},
		{&typesv1.HealthCheck{Command: []string{"true"}, Interval: hcDur(time.Millisecond)}, "health_check.interval"},
		{&typesv1.HealthCheck{Tcp: &typesv1.TCPCheck{Port: 70000}}, "health_check.tcp.port"},
		{&typesv1.HealthCheck{Http: &typesv1.HTTPCheck{Port: 0}}, "health_check.http.port"},
		{&typesv1.HealthCheck{Type: typesv1.HealthCheck_COMMAND}, "health_check.command"},
		{&typesv1.HealthCheck{Command: []string{"true"}, Tcp: &typesv1.TCPCheck{Port: 80}}, "health_check.type"},
	}
	for _, tc := range cases {
		_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "hc-bad", Image: testImage, HealthCheck: tc.hc})
		wantCode(t, err, codes.InvalidArgument, tc.field)
	}
	if _, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true}); err != nil {
		t.Fatal(err)
	}
	if r := h.cli("run", "--rm", "--health-tcp", "70000", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "health_check.tcp.port") {
		t.Errorf("run --health-tcp 70000: %s", r)
	}
	if r := h.cli("run", "--rm", "--health-cmd", "", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "health_check.command") {
		t.Errorf("run --health-cmd '': %s", r)
	}
}

// Checks go on after the agent restarts: recovered from the checkpoint.
func TestHealthChecksSurviveAgentRestart(t *testing.T) {
	launchChecked(t, "hc-restart", &typesv1.HealthCheck{
		Command:  []string{"sh", "-c", "test -f /tmp/ok || { echo gone; exit 1; }"},
		Interval: hcDur(200 * time.Millisecond), GracePeriod: hcDur(0), ConsecutiveFailures: 2,
	}, "sh", "-c", "touch /tmp/ok; exec sleep 600")
	waitHealth(t, "hc-restart", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	if err := h.stopAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, "hc-restart", typesv1.HealthState_HEALTH_STATE_HEALTHY)
	execIn(t, "hc-restart", "rm", "/tmp/ok")
	w, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "hc-restart"})
	if err != nil || w.Container.Reason != typesv1.Reason_REASON_TASK_UNHEALTHY {
		t.Errorf("after the restart, a failing check: %v %v", w, err)
	}
}

// A task's health reaches the master: TaskStatus.healthy, an update on each
// change, gearbox tasks shows it; the kill by a failed check too.
func TestHealthReachesTheMaster(t *testing.T) {
	m := startMasterProc(t)
	a := startClusterAgent(t, m, "hc", "", true)
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "image", "import", healthImageTar(t))
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+a.sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	id := a.agentID(t)
	if r := m.cli("task", "launch", "--id", "hc-task", "--agent-id", id, healthImage, "sh", "-c", "touch /tmp/healthy; exec sleep 600"); r.code != 0 {
		t.Fatal(r)
	}
	waitTaskState(t, m, "hc-task", typesv1.TaskState_TASK_RUNNING, 20*time.Second)
	tk := waitTaskHealthy(t, m, "hc-task", true)
	if tk.Reason != typesv1.Reason_REASON_TASK_HEALTH_CHECK_STATUS_UPDATED {
		t.Errorf("task after its first passed check: %v", tk)
	}
	if r := m.cli("tasks"); !strings.Contains(r.stdout, "TASK_RUNNING (healthy)") {
		t.Errorf("gearbox tasks:\n%s", r.stdout)
	}
	cmd = exec.Command(filepath.Join(h.bin, "gearbox"), "exec", "hc-task", "rm", "/tmp/healthy")
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+a.sock)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("exec: %v\n%s", err, out)
	}
	tk = waitTaskState(t, m, "hc-task", typesv1.TaskState_TASK_KILLED, 30*time.Second)
	if tk.Reason != typesv1.Reason_REASON_TASK_UNHEALTHY || tk.Healthy == nil || tk.GetHealthy() {
		t.Errorf("task killed by its check: %v", tk)
	}
}

func waitTaskHealthy(t *testing.T, m *masterProc, id string, want bool) *masterv1.Task {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := m.c.ReconcileTasks(ctxT(t), &masterv1.ReconcileTasksRequest{TaskIds: []string{id}})
		if err == nil && r.Tasks[0].Healthy != nil && r.Tasks[0].GetHealthy() == want {
			return r.Tasks[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s never healthy=%v: %v %v", id, want, r, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HTTP and TCP checks are made inside the target's network namespace: a
// server in a namespace of its own (unshare -n), on a loopback port the
// host does not serve, is reached by the checks and not from the host.
// (Containers run on the host's network until they get networks of their
// own; this is the path their checks will take then.)
func TestHealthProbesEnterTheNetworkNamespace(t *testing.T) {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("ok\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bb := mustLookPath("busybox")
	srv := exec.Command(mustLookPath("unshare"), "-n", bb, "sh", "-c",
		fmt.Sprintf("%[1]s ip link set lo up && exec %[1]s httpd -f -p 127.0.0.1:%[2]d -h %[3]s", bb, port, www))
	srv.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	s := checks.New(checks.Config{Env: checks.Env{
		Pid: func(context.Context, string) (uint32, error) { return uint32(srv.Process.Pid), nil },
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	every := 200 * time.Millisecond
	s.Add("ns-http", checks.Check{Kind: checks.HTTP, Port: uint16(port), Path: "/index.html", Scheme: "http", Interval: every, Timeout: every, ConsecutiveFailures: 1000}, time.Now())
	s.Add("ns-tcp", checks.Check{Kind: checks.TCP, Port: uint16(port), Interval: every, Timeout: every, ConsecutiveFailures: 1000}, time.Now())
	for _, id := range []string{"ns-http", "ns-tcp"} {
		deadline := time.Now().Add(20 * time.Second)
		for {
			st, _ := s.Status(id)
			if st.State == checks.Healthy {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s %q, want healthy", id, st.State, st.Output)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second); err == nil {
		c.Close()
		t.Fatalf("the host reaches 127.0.0.1:%d: the server is not in a namespace of its own, the test proves nothing", port)
	}
}

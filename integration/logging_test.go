package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// writerCmd prints 1..n, as fast as the shell can, in rounds with short
// pauses so that the run lasts long enough to disturb it mid-stream.
func writerCmd(n, rounds int) []string {
	per := n / rounds
	return []string{"sh", "-c", fmt.Sprintf(`for j in $(seq 0 %d); do seq $((j*%d+1)) $((j*%d+%d)); sleep 0.1; done`, rounds-1, per, per, per)}
}

func launchLogged(t *testing.T, id string, log *agentv1.LogOptions, args ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: args}, Log: log,
	})
	if err != nil {
		t.Fatalf("launch %s: %v", id, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

func waitExit(t *testing.T, id string, within time.Duration) *agentv1.Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for {
		w, err := h.client.WaitContainer(ctx, &agentv1.WaitContainerRequest{ContainerId: id})
		if err == nil {
			return w.Container
		}
		if ctx.Err() != nil {
			t.Fatalf("wait %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond) // the agent may be restarting
	}
}

// checkRotated says whether a stream's kept files hold a contiguous tail of
// 1..last ending at last, no line torn or repeated, each file within max
// plus at most one line.
func checkRotated(t *testing.T, sandbox string, last int, max int64, files int) {
	t.Helper()
	var all []byte
	kept := 0
	for k := files - 1; k >= 0; k-- {
		p := filepath.Join(sandbox, "stdout")
		if k > 0 {
			p += "." + strconv.Itoa(k)
		}
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		kept++
		lineMax := int64(len(strconv.Itoa(last)) + 1)
		if int64(len(b)) > max+lineMax {
			t.Errorf("%s has %d bytes, over %d plus one line", p, len(b), max)
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s ends mid-line", p)
		}
		all = append(all, b...)
	}
	if kept != files {
		t.Errorf("%d files kept, want %d", kept, files)
	}
	lines := strings.Split(strings.TrimSuffix(string(all), "\n"), "\n")
	first, err := strconv.Atoi(lines[0])
	if err != nil {
		t.Fatalf("first kept line %q is torn", lines[0])
	}
	for i, l := range lines {
		if l != strconv.Itoa(first+i) {
			t.Fatalf("kept line %d is %q, want %d: a gap, a tear or a repeat", i, l, first+i)
		}
	}
	if got := first + len(lines) - 1; got != last {
		t.Fatalf("kept tail ends at %d, want %d", got, last)
	}
	t.Logf("kept lines %d..%d in %d files", first, last, kept)
}

var rotOpts = &agentv1.LogOptions{Driver: "logrotate", MaxSize: 64 << 10, MaxFiles: 3}

func TestRotationKeepsAContiguousTail(t *testing.T) {
	c := launchLogged(t, "rot", rotOpts, "seq", "1", "300000")
	if w := waitExit(t, "rot", 2*time.Minute); w.GetExitCode() != 0 {
		t.Fatalf("writer: %v", w)
	}
	checkRotated(t, c.Sandbox, 300000, 64<<10, 3)
	if r := h.cli("inspect", "rot"); !strings.Contains(r.stdout, "logrotate (max-size 64KiB, max-files 3, mode block)") {
		t.Errorf("inspect does not show the logger:\n%s", r.stdout)
	}
}

func TestRotationWhileTheAgentIsKilled(t *testing.T) {
	const n = 1500000
	c := launchLogged(t, "rot-agent", rotOpts, writerCmd(n, 15)...)
	time.Sleep(700 * time.Millisecond)
	if err := h.stopAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if w := waitExit(t, "rot-agent", 3*time.Minute); w.GetExitCode() != 0 {
		t.Fatalf("writer: %v", w)
	}
	checkRotated(t, c.Sandbox, n, 64<<10, 3)
}

func TestRotationWhileContainerdRestarts(t *testing.T) {
	const n = 1500000
	c := launchLogged(t, "rot-ctrd", rotOpts, writerCmd(n, 15)...)
	time.Sleep(700 * time.Millisecond)
	if err := h.containerd.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	if w := waitExit(t, "rot-ctrd", 3*time.Minute); w.GetExitCode() != 0 {
		t.Fatalf("writer: %v", w)
	}
	checkRotated(t, c.Sandbox, n, 64<<10, 3)
	// The agent is still whole after containerd came back.
	if r := h.cli("run", "--rm", testImage, "echo", "after"); r.stdout != "after\n" {
		t.Errorf("run after the containerd restart: %s", r)
	}
}

// logs -f across many rotations prints every line exactly once.
func TestLogsFollowAcrossManyRotations(t *testing.T) {
	const n = 200000
	launchLogged(t, "rot-follow", &agentv1.LogOptions{Driver: "logrotate", MaxSize: 16 << 10, MaxFiles: 100}, writerCmd(n, 10)...)
	r := h.cli("logs", "-f", "rot-follow")
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != n {
		t.Fatalf("logs -f printed %d lines, want %d", len(lines), n)
	}
	for i, l := range lines {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("line %d is %q", i, l)
		}
	}
	// The output crossed rotations: more than one file was written.
	if c := inspect(t, "rot-follow"); fileCount(c.Sandbox, "stdout") < 10 {
		t.Errorf("only %d stdout files: the follow crossed too few rotations to prove anything", fileCount(c.Sandbox, "stdout"))
	}
	// --tail reads the end across files.
	if r := h.cli("logs", "--tail", "3", "--stdout", "rot-follow"); r.stdout != "199998\n199999\n200000\n" {
		t.Errorf("logs --tail 3: %q", r.stdout)
	}
}

func fileCount(dir, prefix string) int {
	m, _ := filepath.Glob(filepath.Join(dir, prefix+"*"))
	return len(m)
}

var rfc5424 = regexp.MustCompile(`^<(\d+)>1 \S+ \S+ gearbox-test - (stdout|stderr) \[gearbox@32473 container="syslogged" namespace="[^"]+"\] (.*)$`)

func TestCustomLoggerPlugin(t *testing.T) {
	r := h.cli("run", "--rm", "--log-driver", "nope", testImage, "true")
	if r.code != 125 || !strings.Contains(r.stderr, `logger "nope" is not configured`) {
		t.Errorf("unconfigured driver: %s", r)
	}
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}},
		Log: &agentv1.LogOptions{Driver: "/bin/sh"}})
	wantCode(t, err, codes.PermissionDenied, "not configured")

	const n = 5000
	launchLogged(t, "syslogged", &agentv1.LogOptions{Driver: "syslog"}, "sh", "-c", fmt.Sprintf("seq 1 %d; echo oops >&2", n))
	waitExit(t, "syslogged", time.Minute)
	var out []string
	errs := 0
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		out, errs = nil, 0
		for _, m := range h.syslog.messages() {
			p := rfc5424.FindStringSubmatch(m)
			if p == nil {
				if strings.Contains(m, "syslogged") {
					t.Fatalf("not RFC 5424: %q", m)
				}
				continue
			}
			switch p[2] {
			case "stdout":
				if p[1] != "14" { // user.info
					t.Fatalf("stdout PRI %s", p[1])
				}
				out = append(out, p[3])
			case "stderr":
				if p[1] != "11" || p[3] != "oops" { // user.err
					t.Fatalf("stderr message %q", m)
				}
				errs++
			}
		}
		if len(out) >= n && errs == 1 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(out) != n || errs != 1 {
		t.Fatalf("syslog got %d stdout and %d stderr lines, want %d and 1", len(out), errs, n)
	}
	for i, l := range out {
		if l != strconv.Itoa(i+1) {
			t.Fatalf("message %d is %q", i, l)
		}
	}
	st, err := h.client.ReadLogs(ctxT(t), &agentv1.ReadLogsRequest{ContainerId: "syslogged"})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, err, codes.FailedPrecondition, "syslog")
}

func TestLogOptionsOutOfBounds(t *testing.T) {
	for _, tc := range []struct {
		log *agentv1.LogOptions
		msg string
	}{
		{&agentv1.LogOptions{Driver: "logrotate", MaxSize: 2 << 30}, "max-size"},
		{&agentv1.LogOptions{Driver: "logrotate", MaxSize: 10}, "minimum"},
		{&agentv1.LogOptions{Driver: "logrotate", MaxFiles: 1000}, "max-files"},
		{&agentv1.LogOptions{Mode: "sometimes"}, "block or drop"},
	} {
		_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}, Log: tc.log})
		wantCode(t, err, codes.InvalidArgument, tc.msg)
	}
	if r := h.cli("run", "--log-opt", "max-size=lots", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "max-size") {
		t.Errorf("bad --log-opt: %s", r)
	}
}

// A logger that dies is noticed: inspect says so and a metric counts it.
func TestLoggerDeathIsReported(t *testing.T) {
	launchLogged(t, "orphaned", nil, "sleep", "300")
	pid := loggerPid(t, "orphaned")
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for inspect(t, "orphaned").LoggingDegraded == "" {
		if time.Now().After(deadline) {
			t.Fatal("the logger's death was not noticed within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := h.cli("inspect", "orphaned"); !strings.Contains(r.stdout, "DEGRADED: gearbox-logger has exited") {
		t.Errorf("inspect:\n%s", r.stdout)
	}
	resp, err := http.Get("http://" + h.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^gearbox_logger_failures_total (\d+)`).FindSubmatch(body)
	if m == nil || string(m[1]) == "0" {
		t.Errorf("gearbox_logger_failures_total not counted:\n%s", body)
	}
}

// loggerPid finds the gearbox-logger the shim started for a container.
func loggerPid(t *testing.T, id string) int {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, p := range procs {
		env, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(env), "CONTAINER_ID="+id+"\x00") || !strings.Contains(string(env), "CONTAINER_NAMESPACE="+h.namespace+"\x00") {
			continue
		}
		dir := filepath.Dir(p)
		if exe, _ := os.Readlink(dir + "/exe"); strings.HasSuffix(exe, "gearbox-logger") {
			pid, _ := strconv.Atoi(filepath.Base(dir))
			return pid
		}
	}
	t.Fatalf("no gearbox-logger found for %s", id)
	return 0
}

func TestLogsSince(t *testing.T) {
	launchLogged(t, "since", nil, "sh", "-c", "echo before; sleep 2.5; echo after")
	waitForOutput(t, "since", "before")
	time.Sleep(1200 * time.Millisecond)
	mark := time.Now().UTC().Format(time.RFC3339Nano)
	waitExit(t, "since", time.Minute)
	if r := h.cli("logs", "--since", mark, "since"); r.code != 0 || r.stdout != "after\n" {
		t.Errorf("logs --since %s: %s", mark, r)
	}
	if r := h.cli("logs", "--since", "1h", "since"); r.stdout != "before\nafter\n" {
		t.Errorf("logs --since 1h: %s", r)
	}
}

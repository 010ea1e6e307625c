package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// pushAs pushes the test image with a layer of random bytes of its own
// on top to the test registry under repo:tag, and returns the reference.
// No agent holds its content yet: containerd shares content between
// namespaces, so an image of known layers would not be fetched at all.
func pushAs(t testing.TB, repo string) string { return pushSized(t, repo, 256<<10) }

func pushSized(t testing.TB, repo string, layer int64) string {
	t.Helper()
	ref := h.registry + "/" + repo
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	l, err := random.Layer(layer, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(h.img, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithAuth(&authn.Basic{Username: regUser, Password: regPass})); err != nil {
		t.Fatalf("pushing %s: %v", ref, err)
	}
	return ref
}

// agentCLI runs the CLI against a cluster agent's own API.
func (a *clusterAgent) cli(args ...string) result {
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), args...)
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+a.sock)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func registryConfigTOML() string {
	return fmt.Sprintf("[registries]\nconfig = %q\n", filepath.Join(h.dockerCfg, "config.json"))
}

// A task placed on an agent without its image pulls it (with the agent's
// registry credentials) and runs with its whole spec: env, user, working
// dir, log options. Its kill policy's grace is observed on a kill that
// names none: TASK_KILLING, then TASK_KILLED.
func TestTaskSpecPullAndKillPolicy(t *testing.T) {
	ref := pushAs(t, "gearbox/spec:1")
	m := startMasterProc(t)
	events := subscribeEvents(t, m, 0)
	a := startClusterAgentWith(t, m, "spec", "rack:s", false, registryConfigTOML())
	id := a.agentID(t)

	// PID 1 ignores SIGTERM (no handler): only the SIGKILL at the end of
	// the grace ends it.
	r := m.cli("task", "launch", "--id", "spec", "--agent-id", id, "-e", "MODE=spec", "-u", "1000:1000", "-w", "/tmp",
		"-l", "team=core", "--log-driver", "logrotate", "--log-opt", "max-files=2", "--stop-timeout", "3", "--pids", "64",
		ref, "sh", "-c", `echo "mode=$MODE uid=$(id -u) pwd=$(pwd)"; while :; do sleep 1; done`)
	if r.code != 0 {
		t.Fatalf("task launch: %s", r)
	}
	waitTaskState(t, m, "spec", typesv1.TaskState_TASK_RUNNING, 60*time.Second)
	ct, err := a.container(t, "spec")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(ct.Env, " "), "MODE=spec") || ct.User != "1000:1000" || ct.WorkingDir != "/tmp" ||
		ct.Log.GetDriver() != "logrotate" || ct.Log.GetMaxFiles() != 2 || ct.Labels["team"] != "core" ||
		ct.Resources.GetPids() != 64 || ct.KillPolicy.GetGracePeriod().AsDuration() != 3*time.Second {
		t.Errorf("the task's container does not have the task's spec: %v", ct)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		lr := a.cli("logs", "spec")
		if strings.Contains(lr.stdout, "mode=spec uid=1000 pwd=/tmp") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the task's output does not show its env, user and working dir: %s", lr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The pull was seen as TASK_STAGING with its progress.
	var staged []string
	for _, e := range events.snapshot() {
		if e.Task.GetId() == "spec" && e.Task.State == typesv1.TaskState_TASK_STAGING && e.Task.Message != "" {
			staged = append(staged, e.Task.Message)
		}
	}
	if len(staged) == 0 || !strings.Contains(staged[0], "pulling the image") {
		t.Errorf("no TASK_STAGING update with the pull's progress: %q (states %v)", staged, events.taskStates("spec"))
	}

	start := time.Now()
	if r := m.cli("task", "kill", "spec"); r.code != 0 {
		t.Fatal(r)
	}
	tk := waitTaskState(t, m, "spec", typesv1.TaskState_TASK_KILLING, 10*time.Second)
	if !strings.Contains(tk.Message, "SIGKILL follows in 3s") {
		t.Errorf("TASK_KILLING says %q", tk.Message)
	}
	if r := m.cli("tasks"); !strings.Contains(r.stdout, "TASK_KILLING") {
		t.Errorf("gearbox tasks does not show TASK_KILLING: %s", r)
	}
	tk = waitTaskState(t, m, "spec", typesv1.TaskState_TASK_KILLED, 20*time.Second)
	if took := time.Since(start); took < 2500*time.Millisecond {
		t.Errorf("killed %s after the kill: the 3s grace of the kill policy was not observed", took)
	}
	if tk.Reason != typesv1.Reason_REASON_TASK_KILLED {
		t.Errorf("killed task: %v", tk)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		states := strings.Join(events.taskStates("spec"), " ")
		if strings.Contains(states, "TASK_RUNNING TASK_KILLING TASK_KILLED") {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("task states in events: %s", states)
			break
		}
	}

	// gearbox run on the same kind of agent: an absent image is pulled;
	// --pull never on an absent one is refused, naming image and flag.
	ref2 := pushAs(t, "gearbox/run:1")
	if r := a.cli("run", "--rm", "--pull", "never", ref2, "true"); r.code != 125 || !strings.Contains(r.stderr, ref2) || !strings.Contains(r.stderr, "--pull never") {
		t.Errorf("run --pull never of an absent image: %s", r)
	}
	if r := a.cli("run", "--rm", ref2, "echo", "pulled-and-ran"); r.code != 0 || !strings.Contains(r.stdout, "pulled-and-ran") {
		t.Errorf("run of an absent image: %s", r)
	}
}

// Failed pulls end TASK_FAILED with their reason; per-task credentials
// reach the agent but never GetTasks, events or any log.
func TestTaskPullFailuresAndCredentials(t *testing.T) {
	ref := pushAs(t, "gearbox/creds:1")
	m := startMasterProc(t)
	events := subscribeEvents(t, m, 0)
	a := startClusterAgentWith(t, m, "creds", "rack:c", false, "")
	id := a.agentID(t)
	const wrongPass = "wrong-pass-4711"
	launch := func(task string, spec *agentv1.LaunchContainerRequest) {
		t.Helper()
		spec.Cmd = &agentv1.StringList{Values: []string{"sleep", "600"}}
		if _, err := m.c.LaunchTask(ctxT(t), &masterv1.LaunchTaskRequest{TaskId: task, AgentId: id, Container: spec}); err != nil {
			t.Fatalf("launch %s: %v", task, err)
		}
	}
	launch("badauth", &agentv1.LaunchContainerRequest{Image: ref, RegistryAuth: &agentv1.RegistryAuth{Username: regUser, Password: wrongPass}})
	tk := waitTaskState(t, m, "badauth", typesv1.TaskState_TASK_FAILED, 60*time.Second)
	if tk.Reason != typesv1.Reason_REASON_IMAGE_AUTH_FAILED || !strings.Contains(tk.Message, "refused the credentials") {
		t.Errorf("pull with wrong credentials: %v", tk)
	}
	launch("missing", &agentv1.LaunchContainerRequest{Image: h.registry + "/gearbox/nothing-here:1", RegistryAuth: &agentv1.RegistryAuth{Username: regUser, Password: regPass}})
	tk = waitTaskState(t, m, "missing", typesv1.TaskState_TASK_FAILED, 60*time.Second)
	if tk.Reason != typesv1.Reason_REASON_IMAGE_NOT_FOUND || !strings.Contains(tk.Message, "not found") {
		t.Errorf("pull of an image the registry lacks: %v", tk)
	}
	launch("never", &agentv1.LaunchContainerRequest{Image: ref, PullPolicy: typesv1.PullPolicy_PULL_NEVER})
	tk = waitTaskState(t, m, "never", typesv1.TaskState_TASK_FAILED, 60*time.Second)
	if tk.Reason != typesv1.Reason_REASON_IMAGE_NOT_FOUND || !strings.Contains(tk.Message, "--pull never") {
		t.Errorf("--pull never of an absent image: %v", tk)
	}
	unreachable := fmt.Sprintf("127.0.0.1:%d", closedPort(t))
	launch("unreachable", &agentv1.LaunchContainerRequest{Image: unreachable + "/x/y:1"})
	tk = waitTaskState(t, m, "unreachable", typesv1.TaskState_TASK_FAILED, 60*time.Second)
	if tk.Reason != typesv1.Reason_REASON_IMAGE_PULL_FAILED || !strings.Contains(tk.Message, "cannot reach registry") {
		t.Errorf("pull from an unreachable registry: %v", tk)
	}
	launch("good", &agentv1.LaunchContainerRequest{Image: ref, RegistryAuth: &agentv1.RegistryAuth{Username: regUser, Password: regPass}})
	waitTaskState(t, m, "good", typesv1.TaskState_TASK_RUNNING, 60*time.Second)

	r := m.cli("tasks", "-o", "json")
	if r.code != 0 || !strings.Contains(r.stdout, `"good"`) {
		t.Fatalf("gearbox tasks: %s", r)
	}
	for what, text := range map[string]string{
		"gearbox tasks -o json": r.stdout, "events": fmt.Sprint(events.snapshot()),
		"the master's log": readFile(m.log), "the agent's log": readFile(a.log),
	} {
		for _, secret := range []string{regPass, wrongPass} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows a registry password", what)
			}
		}
	}
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

func closedPort(t *testing.T) int {
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// countingProxy stands in front of the test registry and counts the GETs
// and HEADs of manifests and blobs it answered with success, by method and
// path.
type countingProxy struct {
	addr string
	mu   sync.Mutex
	gets map[string]int
	srv  *http.Server
}

func startCountingProxy(t testing.TB) *countingProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("http://" + h.registry)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &countingProxy{addr: ln.Addr().String(), gets: map[string]int{}}
	rp.ModifyResponse = func(resp *http.Response) error {
		req := resp.Request
		// A pull resolves its tag with a HEAD of the manifest, then GETs
		// what it lacks: each counts.
		if (req.Method == http.MethodGet || req.Method == http.MethodHead) && resp.StatusCode/100 == 2 &&
			(strings.Contains(req.URL.Path, "/blobs/") || strings.Contains(req.URL.Path, "/manifests/")) {
			p.mu.Lock()
			p.gets[req.Method+" "+req.URL.Path]++
			p.mu.Unlock()
		}
		return nil
	}
	p.srv = &http.Server{Handler: rp}
	done := make(chan struct{})
	go func() { defer close(done); p.srv.Serve(ln) }()
	t.Cleanup(func() { p.srv.Close(); <-done })
	return p
}

func (p *countingProxy) counts() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[string]int{}
	for k, v := range p.gets {
		out[k] = v
	}
	return out
}

// Eight tasks of one absent image, launched at once, cause one pull: the
// registry resolves the tag once and serves each blob and manifest once.
// (Without the shared pull, containerd's ingest locks still fetch each
// blob once, but each pull resolves the tag: eight HEADs.)
func TestConcurrentTaskLaunchesShareOnePull(t *testing.T) {
	pushAs(t, "gearbox/shared:1")
	proxy := startCountingProxy(t)
	ref := proxy.addr + "/gearbox/shared:1"
	m := startMasterProc(t)
	a := startClusterAgentWith(t, m, "shared", "rack:sh", false, "")
	id := a.agentID(t)
	auth := &agentv1.RegistryAuth{Username: regUser, Password: regPass}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			_, err := m.c.LaunchTask(context.Background(), &masterv1.LaunchTaskRequest{TaskId: fmt.Sprintf("shared-%d", i), AgentId: id,
				Container: &agentv1.LaunchContainerRequest{Image: ref, Cmd: &agentv1.StringList{Values: []string{"sleep", "600"}}, RegistryAuth: auth}})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range 8 {
		waitTaskState(t, m, fmt.Sprintf("shared-%d", i), typesv1.TaskState_TASK_RUNNING, 60*time.Second)
	}
	got := proxy.counts()
	blobs, manifests := 0, 0
	for path, n := range got {
		if n != 1 {
			t.Errorf("%s was fetched %d times, want once", path, n)
		}
		if strings.Contains(path, "/blobs/") {
			blobs++
		} else {
			manifests++
		}
	}
	if blobs < 2 || manifests < 1 {
		t.Errorf("the registry served %d blobs and %d manifests: %v", blobs, manifests, got)
	}
}

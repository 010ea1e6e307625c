package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func restartAgent(t *testing.T, sig syscall.Signal, args ...string) {
	t.Helper()
	if err := h.stopAgent(sig); err != nil {
		t.Fatal(err)
	}
	if err := h.startAgentWith(args, nil); err != nil {
		t.Fatal(err)
	}
}

// SIGKILL the agent while 20 containers run and log: all are recovered
// running, and wait, kill and logs work on them.
func TestRecoverTwentyAfterSIGKILL(t *testing.T) {
	const n = 20
	pids := map[string]uint32{}
	for i := range n {
		id := fmt.Sprintf("many-%d", i)
		c := launch(t, id, "sh", "-c", fmt.Sprintf(`i=0; while true; do i=$((i+1)); echo "%s $i"; sleep 0.1; done`, id))
		pids[id] = c.Pid
	}
	waitForOutput(t, "many-19", "many-19 1")
	restartAgent(t, syscall.SIGKILL)
	for id, pid := range pids {
		c := inspect(t, id)
		if c.State != typesv1.TaskState_TASK_RUNNING || c.Pid != pid {
			t.Errorf("%s after SIGKILL: %v pid %d (was %d)", id, c.State, c.Pid, pid)
		}
	}
	if r := h.cli("logs", "--tail", "1", "many-7"); !strings.HasPrefix(r.stdout, "many-7 ") {
		t.Errorf("logs after recovery: %s", r)
	}
	if r := h.cli("kill", "many-3"); r.code != 0 {
		t.Fatal(r)
	}
	if r := h.cli("wait", "many-3"); r.stdout != "137\n" {
		t.Errorf("wait after recovery: %s", r)
	}
}

// A container the checkpoint does not know is destroyed, or kept by config.
func TestUnknownContainers(t *testing.T) {
	launch(t, "forgotten", "sleep", "300")
	cp := filepath.Join(h.workDir(), "meta", "containers", "forgotten.json")
	saved, err := os.ReadFile(cp)
	if err != nil {
		t.Fatalf("no checkpoint for a running container: %v", err)
	}
	var rec struct {
		SchemaVersion int `json:"schema_version"`
	}
	if json.Unmarshal(saved, &rec) != nil || rec.SchemaVersion != 1 {
		t.Fatalf("checkpoint without schema version: %s", saved)
	}
	// A container made behind gearbox's back, in its namespace.
	stranger := strangerContainer(t, "stranger")

	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	os.Remove(cp)
	if err := h.startAgentWith([]string{"--unknown-containers=keep"}, nil); err != nil {
		t.Fatal(err)
	}
	if c := inspect(t, "forgotten"); c.State != typesv1.TaskState_TASK_RUNNING {
		t.Errorf("kept container: %v", c.State)
	}
	if _, err := os.Stat(cp); err != nil {
		t.Errorf("a kept container is checkpointed again: %v", err)
	}
	if syscall.Kill(int(stranger), 0) != nil {
		t.Error("the stranger was not kept")
	}
	// Now forgotten again, with the default policy: both go.
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	os.Remove(cp)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.client.WaitContainer(ctxT(t), &agentv1.WaitContainerRequest{ContainerId: "forgotten"}); err == nil {
		t.Error("an unknown container survived recovery")
	}
	ctx := namespaces.WithNamespace(context.Background(), h.namespace)
	if _, err := h.ctrd(t).LoadContainer(ctx, "stranger"); err == nil {
		t.Error("the stranger survived recovery")
	}
	if syscall.Kill(int(stranger), 0) == nil {
		t.Error("the stranger's process still runs")
	}
}

// strangerContainer runs a container with the plain containerd client in
// the agent's namespace and returns its pid.
func strangerContainer(t *testing.T, id string) uint32 {
	t.Helper()
	c := h.ctrd(t)
	ctx := namespaces.WithNamespace(context.Background(), h.namespace)
	img, err := c.GetImage(ctx, "localhost/gearbox-test:1")
	if err != nil {
		t.Fatal(err)
	}
	cont, err := c.NewContainer(ctx, id, client.WithNewSnapshot(id, img),
		client.WithNewSpec(oci.WithImageConfig(img), oci.WithProcessArgs("sleep", "300"), oci.WithCgroup("/"+h.namespace+"/"+id)))
	if err != nil {
		t.Fatal(err)
	}
	task, err := cont.NewTask(ctx, nullIO)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		task.Delete(ctx, client.WithProcessKill)
		cont.Delete(ctx, client.WithSnapshotCleanup)
	})
	return task.Pid()
}

func TestRecoverCleanupKillsEverything(t *testing.T) {
	a := launch(t, "doomed-a", "sleep", "300")
	b := launch(t, "doomed-b", "sleep", "300")
	restartAgent(t, syscall.SIGTERM, "--recover=cleanup")
	for _, c := range []*agentv1.Container{a, b} {
		if syscall.Kill(int(c.Pid), 0) == nil {
			t.Errorf("%s still runs after --recover=cleanup", c.Id)
		}
	}
	if r := h.cli("ps", "-a"); strings.Contains(r.stdout, "doomed") {
		t.Errorf("ps after cleanup:\n%s", r.stdout)
	}
	restartAgent(t, syscall.SIGTERM)
}

// A corrupt checkpoint stops the agent with a message naming the file and
// the way out, and kills nothing.
func TestCorruptCheckpoint(t *testing.T) {
	c := launch(t, "precious", "sleep", "300")
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(h.workDir(), "meta", "containers", "precious.json")
	good, _ := os.ReadFile(cp)
	os.WriteFile(cp, []byte(`{"schema_version": 1, "container": {"ID": "prec`), 0o600)
	out, err := h.agentFails()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, cp) || !strings.Contains(out, "mv "+cp) {
		t.Errorf("the error does not name the file and the way out:\n%s", out)
	}
	if syscall.Kill(int(c.Pid), 0) != nil {
		t.Fatal("a corrupt checkpoint killed a container")
	}
	os.WriteFile(cp, good, 0o600)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if ct := inspect(t, "precious"); ct.State != typesv1.TaskState_TASK_RUNNING {
		t.Errorf("after repair: %v", ct.State)
	}
}

// One that vanished from containerd while the agent was down is reported
// terminal with a reason that says so; after a reboot (boot ID changed),
// every container is gone.
func TestVanishedAndRebooted(t *testing.T) {
	launch(t, "vanisher", "sleep", "300")
	launch(t, "rebooted", "sleep", "300")
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	ctx := namespaces.WithNamespace(context.Background(), h.namespace)
	cl := h.ctrd(t)
	for _, id := range []string{"vanisher", "rebooted"} {
		cont, err := cl.LoadContainer(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		task, _ := cont.Task(ctx, nil)
		task.Delete(ctx, client.WithProcessKill)
		if id == "vanisher" {
			cont.Delete(ctx, client.WithSnapshotCleanup)
		}
	}
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if c := inspect(t, "vanisher"); c.State != typesv1.TaskState_TASK_LOST || c.Reason != typesv1.Reason_REASON_CONTAINER_VANISHED {
		t.Errorf("vanished: %v %v %q", c.State, c.Reason, c.Message)
	}
	h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "vanisher"})

	// A reboot: the task is gone and the boot ID differs.
	launch(t, "rebooted-2", "sleep", "300")
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	cont, _ := cl.LoadContainer(ctx, "rebooted-2")
	task, _ := cont.Task(ctx, nil)
	task.Delete(ctx, client.WithProcessKill)
	meta := filepath.Join(h.workDir(), "meta", "agent.json")
	data, _ := os.ReadFile(meta)
	var m map[string]any
	json.Unmarshal(data, &m)
	m["boot_id"] = "00000000-0000-0000-0000-000000000000"
	data, _ = json.Marshal(m)
	os.WriteFile(meta, data, 0o600)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	if c := inspect(t, "rebooted-2"); c.State != typesv1.TaskState_TASK_GONE || c.Reason != typesv1.Reason_REASON_AGENT_RESTARTED {
		t.Errorf("after a reboot: %v %v %q", c.State, c.Reason, c.Message)
	}
}

// containerd going away: the agent keeps serving state and logs, answers
// launches with Unavailable, and reconnects when containerd is back.
func TestContainerdGoesAway(t *testing.T) {
	launch(t, "steady", "sh", "-c", "echo up; sleep 300")
	waitForOutput(t, "steady", "up")
	h.containerd.StopKeepMounts()
	restarted := false
	defer func() {
		if !restarted {
			h.containerd.Restart(context.Background())
		}
	}()
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}})
	wantCode(t, err, codes.Unavailable, "")
	if r, err := h.client.GetHealth(ctxT(t), &agentv1.GetHealthRequest{}); err != nil || r.Healthy {
		t.Errorf("health with containerd down: %v %v", r, err)
	}
	if c := inspect(t, "steady"); c.State != typesv1.TaskState_TASK_RUNNING {
		t.Errorf("state with containerd down: %v", c.State)
	}
	if r := h.cli("logs", "steady"); r.stdout != "up\n" {
		t.Errorf("logs with containerd down: %s", r)
	}
	if err := h.containerd.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	restarted = true
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := h.cli("run", "--rm", testImage, "echo", "back")
		if r.stdout == "back\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no launch within 30s of containerd's return: %s", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r := h.cli("kill", "steady"); r.code != 0 {
		t.Fatal(r)
	}
	if r := h.cli("wait", "steady"); r.stdout != "137\n" {
		t.Errorf("wait after containerd's return: %s", r)
	}
}

// READY=1 reaches NOTIFY_SOCKET only once recovery is done and the API
// serves; STOPPING=1 on SIGTERM.
func TestSystemdNotify(t *testing.T) {
	launch(t, "ready-check", "sleep", "300")
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var mu sync.Mutex
	var got []string
	readyAt := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msg := string(buf[:n])
			mu.Lock()
			got = append(got, msg)
			mu.Unlock()
			if strings.Contains(msg, "READY=1") {
				// Recovery done means the recovered container is served now,
				// to a client that connects now.
				conn, err := grpc.NewClient("unix://"+h.agentSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
				if err == nil {
					r, err := agentv1.NewAgentClient(conn).GetContainers(context.Background(), &agentv1.GetContainersRequest{})
					if err != nil || len(r.Containers) == 0 {
						t.Errorf("READY=1 before the API served recovered containers: %v", err)
					}
					conn.Close()
				}
				readyAt <- time.Now()
			}
		}
	}()
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := h.startAgentWith(nil, []string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-readyAt:
	case <-time.After(10 * time.Second):
		t.Fatal("no READY=1")
	}
	time.Sleep(500 * time.Millisecond)
	restartAgent(t, syscall.SIGTERM)
	mu.Lock()
	all := strings.Join(got, "|")
	mu.Unlock()
	if !strings.Contains(all, "WATCHDOG=1") || !strings.Contains(all, "STOPPING=1") {
		t.Errorf("notifications: %s", all)
	}
}

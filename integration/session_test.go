package integration

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func TestExecStdinAndExitStatus(t *testing.T) {
	launch(t, "host", "sleep", "300")
	start := time.Now()
	r := h.cliIn("data\n", "exec", "-i", "host", "cat")
	if r.code != 0 || r.stdout != "data\n" {
		t.Fatalf("echo data | exec -i cat: %s", r)
	}
	// cat ends only on EOF: without it the CLI would wait for its 2-minute
	// timeout.
	if took := time.Since(start); took > time.Minute {
		t.Errorf("exec -i cat took %v after stdin closed", took)
	}
	if r := h.cli("exec", "host", "sh", "-c", "echo out; echo err >&2; exit 3"); r.code != 3 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Errorf("exit status and streams: %s", r)
	}
	if r := h.cli("exec", "host", "no-such-command"); r.code != 127 {
		t.Errorf("missing command: %s", r)
	}
	// Every session is in the audit log: its end record says how it ended.
	data, _ := os.ReadFile(filepath.Join(h.workDir(), "audit.log"))
	var ends []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["event"] == "end" {
			ends = append(ends, m)
		}
	}
	if len(ends) < 2 {
		t.Fatalf("audit log has %d end records: %s", len(ends), data)
	}
	last := ends[len(ends)-2]
	if last["identity"] == nil || !strings.Contains(last["identity"].(string), "uid:0") || last["exit_code"].(float64) != 3 || last["bytes_out"].(float64) != 8 {
		t.Errorf("audit record: %v", last)
	}
}

// A real terminal: output of a typed command, a resize seen by stty size,
// and exit 3 making the CLI exit 3.
func TestExecTTYInTmux(t *testing.T) {
	launch(t, "tty-host", "sleep", "300")
	tm := newTmux(t, "100", "30")
	tm.cli("exec -it tty-host sh")
	tm.expect("/ #", "prompt")
	tm.keys("echo typed-$((6*7))", "Enter")
	tm.expect("typed-42", "typed command's output")
	// The host's shell has no /etc/gearbox-demo: the answers come from
	// inside the container.
	tm.keys("echo in-$(cat /etc/gearbox-demo | wc -l)-$(stty size | tr ' ' x)", "Enter")
	tm.expect("in-1-30x100", "initial size inside the container")
	tm.run("resize-window", "-t", "t", "-x", "120", "-y", "40")
	tm.expectRetyping("echo in-$(cat /etc/gearbox-demo | wc -l)-$(stty size | tr ' ' x)", "in-1-40x120", "size after resize inside the container")
	tm.keys("exit 3", "Enter")
	tm.expect("CLI_EXIT=3\n", "exit status")
}

// Killing the CLI mid-session leaves no process, exec or FIFO behind.
func TestExecClientVanishes(t *testing.T) {
	c := launch(t, "orphan-host", "sleep", "300")
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "exec", "orphan-host", "sleep", "301")
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+h.agentSock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	procs := func() []string { return containerProcs("orphan-host") }
	deadline := time.Now().Add(10 * time.Second)
	for len(procs()) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("the session's process never started")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The running session is in the audit log already: its start record
	// is written before its command runs, its end record not yet.
	if starts, ends := auditOf(t, "orphan-host", "301"); starts != 1 || ends != 0 {
		t.Errorf("while the session runs the audit log has %d start and %d end records for it, want 1 and 0", starts, ends)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	killed := time.Now()
	fifos := filepath.Join(h.dir, "agent", "run", "fifo")
	for {
		entries, _ := os.ReadDir(fifos)
		if p := procs(); len(p) == 1 && len(entries) == 0 {
			break
		}
		if time.Since(killed) > 30*time.Second {
			var what []string
			for _, p := range procs() {
				cmdline, _ := os.ReadFile("/proc/" + p + "/cmdline")
				stat, _ := os.ReadFile("/proc/" + p + "/stat")
				what = append(what, p+":"+strings.ReplaceAll(string(cmdline), "\x00", " ")+" "+strings.Fields(string(stat) + " ? ? ?")[2])
			}
			t.Fatalf("30s after the client died: processes %v, fifo entries %d", what, len(entries))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(int(c.Pid), 0) != nil {
		t.Error("the container itself died with the session")
	}
	if starts, ends := auditOf(t, "orphan-host", "301"); starts != 1 || ends != 1 {
		t.Errorf("after the session the audit log has %d start and %d end records for it, want 1 and 1", starts, ends)
	}
}

// auditOf counts the audit log's start and end records of sessions in a
// container whose command ends with arg.
func auditOf(t *testing.T, container, arg string) (starts, ends int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.workDir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var m struct {
			Event       string   `json:"event"`
			SessionID   string   `json:"session_id"`
			ContainerID string   `json:"container_id"`
			Command     []string `json:"command"`
		}
		if json.Unmarshal([]byte(l), &m) != nil || m.ContainerID != container || len(m.Command) == 0 || m.Command[len(m.Command)-1] != arg {
			continue
		}
		if m.SessionID == "" {
			t.Errorf("audit record without a session ID: %s", l)
		}
		switch m.Event {
		case "start":
			starts++
		case "end":
			ends++
		}
	}
	return starts, ends
}

func TestSessionRefusals(t *testing.T) {
	launch(t, "refuser", "sleep", "300")
	launch(t, "stopped", "true")
	waitExit(t, "stopped", 30*time.Second)
	open := func(first *agentv1.SessionRequest, more ...*agentv1.SessionRequest) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		st, err := h.client.LaunchNestedContainerSession(ctx)
		if err != nil {
			return err
		}
		st.Send(first)
		for _, m := range more {
			st.Send(m)
		}
		for {
			if _, err := st.Recv(); err != nil {
				return err
			}
		}
	}
	launchFrame := func(id string, args ...string) *agentv1.SessionRequest {
		return &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: id, Command: args}}}
	}
	wantCode(t, open(launchFrame("ghost", "true")), codes.NotFound, "ghost")
	wantCode(t, open(launchFrame("stopped", "true")), codes.FailedPrecondition, "not running")
	wantCode(t, open(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: []byte("x")}}), codes.InvalidArgument, "first message")
	wantCode(t, open(launchFrame("refuser", "sleep", "5"), &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Resize{Resize: &agentv1.WindowSize{}}}), codes.InvalidArgument, "0x0")

	// max_sessions = 3 in the harness: a fourth is refused.
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "exec", "refuser", "sleep", "30")
		cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+h.agentSock)
		cmd.Start()
		cmds = append(cmds, cmd)
	}
	defer func() {
		for _, c := range cmds {
			c.Process.Kill()
			c.Wait()
		}
	}()
	time.Sleep(1500 * time.Millisecond)
	wantCode(t, open(launchFrame("refuser", "true")), codes.ResourceExhausted, "max_sessions")
}

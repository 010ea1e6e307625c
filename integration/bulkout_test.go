package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/internal/bulkout"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// blobScript writes 64 MiB of random bytes to stdout and their sha256 to
// stderr, then exits 3.
const blobScript = "head -c 67108864 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 && cat /tmp/blob && rm /tmp/blob; exit 3"

// Bulk output through the API: the agent names a token before any output,
// stdout comes whole on the bulk connection and in no frame, stderr and
// the exit status on the stream.
func TestBulkOutputExactBytes(t *testing.T) {
	launch(t, "bulk-host", "sleep", "300")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := h.client.LaunchNestedContainerSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "bulk-host",
		Command: []string{"sh", "-c", blobScript}, BulkOutput: true}}})
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	sum := sha256.New()
	rcv := bulkout.NewReceiver(h.agentSock, sum)
	defer rcv.Close()
	var stderr strings.Builder
	var tokens, stdoutFrames int
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("session: %v", err)
		}
		switch f := m.Frame.(type) {
		case *agentv1.SessionResponse_BulkOutput:
			tokens++
			if err := rcv.Start(ctx, f.BulkOutput.Token); err != nil {
				t.Fatal(err)
			}
		case *agentv1.SessionResponse_Stdout:
			stdoutFrames++
		case *agentv1.SessionResponse_Stderr:
			stderr.Write(f.Stderr)
		case *agentv1.SessionResponse_Exit:
			n, err := rcv.Wait()
			if err != nil || n != 64<<20 {
				t.Fatalf("bulk output: %d bytes, %v; want %d", n, err, 64<<20)
			}
			if tokens != 1 || stdoutFrames != 0 {
				t.Errorf("%d bulk output frames and %d stdout frames, want 1 and 0", tokens, stdoutFrames)
			}
			if want := strings.Fields(stderr.String()); len(want) == 0 || want[0] != hex.EncodeToString(sum.Sum(nil)) {
				t.Errorf("sha256 of the bulk output %x, the command's own: %q", sum.Sum(nil), stderr.String())
			}
			if f.Exit.ExitCode != 3 {
				t.Errorf("exit code %d, want 3", f.Exit.ExitCode)
			}
			return
		}
	}
}

// gearbox exec with stdout to a pipe takes the bulk path: the same bytes
// and exit status as the command's.
func TestExecBulkOutputCLI(t *testing.T) {
	launch(t, "bulk-cli", "sleep", "300")
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "exec", "bulk-cli", "sh", "-c", blobScript)
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+h.agentSock)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	n, _ := io.Copy(sum, out)
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 3 {
		t.Fatalf("gearbox exec: exit %d (%v), want 3; stderr %q", code, err, stderr.String())
	}
	if want := strings.Fields(stderr.String()); n != 64<<20 || len(want) == 0 || want[0] != hex.EncodeToString(sum.Sum(nil)) {
		t.Errorf("stdout: %d bytes, sha256 %x; the command's: %q", n, sum.Sum(nil), stderr.String())
	}
}

// A client that goes mid-stream (its call cancelled, its bulk connection
// unread) leaves the container running, with no exec left in it, and the
// next session works.
func TestBulkOutputClientCancels(t *testing.T) {
	c := launch(t, "bulk-cancel", "sleep", "300")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := h.client.LaunchNestedContainerSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "bulk-cancel",
		Command: []string{"cat", "/dev/zero"}, BulkOutput: true}}})
	m, err := st.Recv()
	if err != nil || m.GetBulkOutput() == nil {
		t.Fatalf("first frame %v, %v; want the bulk output token", m, err)
	}
	conn, err := bulkout.Dial(ctx, h.agentSock, m.GetBulkOutput().GetToken())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if n, err := io.CopyN(io.Discard, conn, 16<<20); err != nil {
		t.Fatalf("read %d bytes of bulk output: %v", n, err)
	}
	cancel() // and the connection is left unread
	// The exec is gone, and so are its FIFOs.
	fifos := filepath.Join(h.dir, "agent", "run", "fifo")
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, _ := os.ReadDir(fifos)
		if len(containerProcs("bulk-cancel")) == 1 && len(entries) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the client went the container has processes %v, and %d FIFO entries are left", containerProcs("bulk-cancel"), len(entries))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if syscall.Kill(int(c.Pid), 0) != nil {
		t.Error("the container itself died with the session")
	}
	// The agent closed the bulk connection of the session that ended.
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.Copy(io.Discard, conn); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Error("the bulk connection of a cancelled session is still open after 30s")
	}
	if r := h.cli("exec", "bulk-cancel", "echo", "still here"); r.code != 0 || r.stdout != "still here\n" {
		t.Errorf("exec after the cancelled session: %s", r)
	}
}

// containerProcs lists the pids in a container's cgroup (v1 pids
// hierarchy, or v2).
func containerProcs(id string) []string {
	data, err := os.ReadFile(filepath.Join("/sys/fs/cgroup/pids", h.namespace, id, "cgroup.procs"))
	if err != nil {
		data, _ = os.ReadFile(filepath.Join("/sys/fs/cgroup", h.namespace, id, "cgroup.procs"))
	}
	return strings.Fields(string(data))
}

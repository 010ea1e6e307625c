package integration

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// ptyCLI is the real CLI on a pseudo-terminal gearbox's test opens, so
// that the bytes it writes can be read exactly (the tmux tests show what a
// person sees; these show what the terminal receives).
type ptyCLI struct {
	t    *testing.T
	cmd  *exec.Cmd
	ptmx *os.File

	mu  sync.Mutex
	out bytes.Buffer
	eof chan struct{}
}

func startPTY(t *testing.T, rows, cols uint16, args ...string) *ptyCLI {
	t.Helper()
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), args...)
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+h.agentSock, "TERM=xterm")
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: rows, Cols: cols})
	if err != nil {
		t.Fatalf("starting gearbox %s on a pty: %v", strings.Join(args, " "), err)
	}
	p := &ptyCLI{t: t, cmd: cmd, ptmx: ptmx, eof: make(chan struct{})}
	go func() {
		defer close(p.eof)
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			p.mu.Lock()
			p.out.Write(buf[:n])
			p.mu.Unlock()
			if err != nil {
				return // EIO once the CLI and everything on the pty closed it
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		ptmx.Close()
		<-p.eof
	})
	return p
}

func (p *ptyCLI) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitFor waits up to a minute for want in the output: the deadline is
// for a hung CLI, not a measure of speed.
func (p *ptyCLI) waitFor(want, what string) {
	p.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(p.output(), want) {
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: %q never reached the terminal; it has %q", what, want, p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// exit waits for the CLI's exit status and the end of its output.
func (p *ptyCLI) exit() int {
	p.t.Helper()
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		select {
		case <-p.eof:
		case <-time.After(time.Minute):
			p.t.Fatal("the pty's output never ended after the CLI exited")
		}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			p.t.Fatal(err)
		}
		return 0
	case <-time.After(time.Minute):
		p.t.Fatalf("the CLI did not exit; the terminal has %q", p.output())
		return -1
	}
}

// run -it on a terminal: the container's shell sees the terminal's size
// from its first instruction and a terminal of its own, a resize arrives
// as SIGWINCH with the new size, and the container's exit status is the
// CLI's. The bytes are exact: the local terminal is raw, so what the
// container's terminal writes (\r\n included) is what arrives.
func TestRunTTYThroughPTY(t *testing.T) {
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "pty-run", Force: true})
	})
	p := startPTY(t, 24, 80, "run", "-it", "--name", "pty-run", testImage,
		"sh", "-c", `stty size; tty; trap 'stty size; exit 7' WINCH; echo ready; while :; do sleep 0.1; done`)
	p.waitFor("ready\r\n", "the shell's start")
	if err := pty.Setsize(p.ptmx, &pty.Winsize{Rows: 40, Cols: 120}); err != nil {
		t.Fatal(err)
	}
	if code := p.exit(); code != 7 {
		t.Errorf("the CLI exited %d, want the container's 7; the terminal has %q", code, p.output())
	}
	if got, want := p.output(), "24 80\r\n/dev/pts/0\r\nready\r\n40 120\r\n"; got != want {
		t.Errorf("the terminal received %q, want %q", got, want)
	}
}

// exec -it on a terminal: typed bytes reach the process through its
// terminal (echoed by it, \r made \n), end of input (^D) ends cat, and the
// exit status is the CLI's.
func TestExecTTYThroughPTY(t *testing.T) {
	launch(t, "pty-host", "sleep", "300")
	p := startPTY(t, 30, 100, "exec", "-it", "pty-host", "sh", "-c", "stty size; cat; exit 4")
	p.waitFor("30 100\r\n", "the terminal's size at start")
	if _, err := p.ptmx.Write([]byte("typed\r")); err != nil {
		t.Fatal(err)
	}
	p.waitFor("typed\r\ntyped\r\n", "the echo and cat's copy of a typed line")
	if _, err := p.ptmx.Write([]byte{4}); err != nil { // ^D
		t.Fatal(err)
	}
	if code := p.exit(); code != 4 {
		t.Errorf("the CLI exited %d, want the process's 4; the terminal has %q", code, p.output())
	}
	if got, want := p.output(), "30 100\r\ntyped\r\ntyped\r\n"; got != want {
		t.Errorf("the terminal received %q, want %q", got, want)
	}
}

package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Issue 12 as reported, against the real agent and gearbox-logger: a
// container swaps its stdout for a link to a host file; `gearbox logs`
// (readonly is enough) must not print the host file, and the logger makes
// a file of its own again and keeps the output there.
func TestLogsOfAContainerThatLinksItsStdout(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("host secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	launchLogged(t, "linkout", nil, "sh", "-c",
		`echo before; rm $GEARBOX_SANDBOX/stdout; ln -s `+secret+` $GEARBOX_SANDBOX/stdout; sleep 1.5; echo after; sleep 300`)
	deadline := time.Now().Add(20 * time.Second)
	var r result
	for time.Now().Before(deadline) {
		r = cliAsNobody("logs", "linkout")
		if strings.Contains(r.stdout+r.stderr, "secret") {
			t.Fatalf("gearbox logs printed the host file: %s", r)
		}
		if r.stdout == "after\n" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if r.stdout != "after\n" {
		t.Errorf("logs never showed the output after the swap: %s", r)
	}
	if b, err := os.ReadFile(secret); err != nil || string(b) != "host secret\n" {
		t.Errorf("host file changed: %q, %v", b, err)
	}
}

// The old logger kept its time index in the sandbox and rewrote it through
// .stdout.times.tmp at each rotation: a link there made it create and
// write a host file. Its bookkeeping is host-only now.
func TestRotationIgnoresLinksAtTheOldBookkeepingNames(t *testing.T) {
	hostDir := t.TempDir()
	target := filepath.Join(hostDir, "created")
	script := `for n in .stdout.times.tmp .stdout.times .stdout.lock; do ln -s ` + target + ` $GEARBOX_SANDBOX/$n; done; seq 1 20000`
	c := launchLogged(t, "linkidx", &agentv1.LogOptions{Driver: "logrotate", MaxSize: 4096, MaxFiles: 3}, "sh", "-c", script)
	if w := waitExit(t, "linkidx", time.Minute); w.GetExitCode() != 0 {
		t.Fatalf("writer: %v", w)
	}
	if _, err := os.Lstat(target); err == nil {
		t.Fatal("gearbox-logger created a host file through a link in the sandbox")
	}
	checkRotated(t, c.Sandbox, 20000, 4096, 3)
	if r := h.cli("logs", "--tail", "1", "linkidx"); r.code != 0 || r.stdout != "20000\n" {
		t.Errorf("logs --tail 1: %s", r)
	}
	if r := h.cli("logs", "--since", "1h", "linkidx"); r.code != 0 || !strings.HasSuffix(r.stdout, "\n20000\n") {
		t.Errorf("logs --since 1h: code %d, %d bytes, stderr %q", r.code, len(r.stdout), r.stderr)
	}
}

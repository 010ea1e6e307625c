package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The unit in the repo passes systemd-analyze verify, and make install
// puts binaries, unit and config where the unit expects them.
func TestSystemdUnitAndInstall(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze is needed: apt-get install systemd (hack/install-deps.sh test does it)")
	}
	dest := t.TempDir()
	out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest).CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, p := range []string{"usr/local/bin/gearbox", "usr/local/bin/gearbox-logger", "etc/systemd/system/gearbox-agent.service", "etc/gearbox/agent.toml"} {
		if _, err := os.Stat(filepath.Join(dest, p)); err != nil {
			t.Errorf("make install did not install %s: %v", p, err)
		}
	}
	// verify checks that ExecStart exists: point it at the installed binary.
	unit, _ := os.ReadFile(filepath.Join(dest, "etc/systemd/system/gearbox-agent.service"))
	u := strings.ReplaceAll(string(unit), "/usr/local/bin/gearbox", filepath.Join(dest, "usr/local/bin/gearbox"))
	u = strings.ReplaceAll(u, "/etc/gearbox/agent.toml", filepath.Join(dest, "etc/gearbox/agent.toml"))
	path := filepath.Join(t.TempDir(), "gearbox-agent.service")
	os.WriteFile(path, []byte(u), 0o644)
	if out, err := exec.Command("systemd-analyze", "verify", path).CombinedOutput(); err != nil {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	} else if strings.Contains(string(out), "gearbox-agent.service") {
		t.Errorf("systemd-analyze verify warns about the unit:\n%s", out)
	}
	// The installed default config is one the agent accepts.
	if out, err := exec.Command(filepath.Join(dest, "usr/local/bin/gearbox"), "agent", "--config", filepath.Join(dest, "etc/gearbox/agent.toml"), "--print-config").CombinedOutput(); err != nil {
		t.Errorf("the installed config is refused: %v\n%s", err, out)
	}
}

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The sandbox files API through the CLI, against a container that plants
// links to host files, a FIFO and a deep path in its sandbox.
func TestSandboxFiles(t *testing.T) {
	script := `S=/mnt/sandbox; echo hello > $S/a.txt; mkdir $S/d; echo deep > $S/d/f; ln -s /etc/shadow $S/shadow; ln -s / $S/root; mkfifo $S/fifo; touch $S/ready;
i=0; while [ ! -e $S/go ]; do sleep 0.1; i=$((i+1)); [ $i -gt 600 ] && exit 3; done; for n in 1 2 3; do echo line$n; sleep 0.3; done`
	if r := h.cli("run", "-d", "--name", "fsbox", testImage, "sh", "-c", script); r.code != 0 {
		t.Fatal(r)
	}
	t.Cleanup(func() { h.cli("rm", "-f", "fsbox") })
	c := inspect(t, "fsbox")
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h.cli("fs", "ls", "fsbox").stdout, "ready") {
		if time.Now().After(deadline) {
			t.Fatal("the container never made its files")
		}
		time.Sleep(100 * time.Millisecond)
	}

	r := h.cli("fs", "ls", "-o", "json", "fsbox")
	var infos []struct {
		Path string `json:"path"`
		Size string `json:"size"`
		Mode uint32 `json:"mode"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &infos); err != nil || r.code != 0 {
		t.Fatalf("fs ls -o json: %v: %s", err, r)
	}
	paths := map[string]bool{}
	for _, fi := range infos {
		paths[fi.Path] = true
	}
	for _, p := range []string{"a.txt", "d", "shadow", "root", "fifo", "stdout", "stderr"} {
		if !paths[p] {
			t.Errorf("fs ls: %s missing from %s", p, r.stdout)
		}
	}
	if r := h.cli("fs", "ls", "fsbox:d"); r.code != 0 || !strings.Contains(r.stdout, "d/f") || !strings.HasPrefix(strings.Split(r.stdout, "\n")[1], "-rw-") {
		t.Errorf("fs ls fsbox:d: %s", r)
	}
	if r := h.cli("fs", "cat", "fsbox:a.txt"); r.code != 0 || r.stdout != "hello\n" {
		t.Errorf("fs cat: %s", r)
	}

	refused := map[string]string{
		"fsbox:../../../../etc/shadow":        `".."`,
		"fsbox:/etc/shadow":                   "absolute",
		"fsbox:shadow":                        "symlink",
		"fsbox:root/etc/shadow":               "symlink",
		"fsbox:fifo":                          "FIFO",
		"fsbox:" + strings.Repeat("x/", 2100): "PATH_MAX",
	}
	for arg, says := range refused {
		start := time.Now()
		r := h.cli("fs", "cat", arg)
		if r.code == 0 || !strings.Contains(r.stderr, says) || strings.Contains(r.stdout, "root:") {
			t.Errorf("fs cat %.40s: want a refusal saying %q: %s", arg, says, r)
		}
		if time.Since(start) > 30*time.Second {
			t.Errorf("fs cat %.40s hung", arg)
		}
	}
	if r := cliAsNobody("fs", "cat", "fsbox:a.txt"); r.code == 0 || !strings.Contains(r.stderr, "operator") {
		t.Errorf("a read-only client read the sandbox: %s", r)
	}

	// tail -f prints what is there, then what is appended, and ends with
	// the container.
	if err := os.WriteFile(filepath.Join(c.Sandbox, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r = h.cli("fs", "tail", "-f", "fsbox:stdout")
	if r.code != 0 || r.stdout != "line1\nline2\nline3\n" {
		t.Errorf("fs tail -f: %s", r)
	}
	if r := h.cli("fs", "tail", "-n", "1", "fsbox:stdout"); r.stdout != "line3\n" {
		t.Errorf("fs tail -n 1: %s", r)
	}
}

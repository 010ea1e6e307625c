//go:build bench

package integration

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Reading a sandbox file through ReadFile (gearbox fs cat: the agent
// opens it beneath the sandbox, streams 64 KiB chunks over gRPC) against
// cat of the same file on the host, same run.
func TestBenchReadFile(t *testing.T) {
	const size = 64 << 20
	c := launch(t, "bench-files", "sh", "-c", "head -c 67108864 /dev/urandom > /mnt/sandbox/blob")
	waitExit(t, "bench-files", time.Minute)
	host := filepath.Join(c.Sandbox, "blob")
	want, err := os.ReadFile(host)
	if err != nil || len(want) != size {
		t.Fatalf("blob: %d bytes, %v", len(want), err)
	}
	var api, direct []float64
	for range 5 {
		start := time.Now()
		cmd := exec.Command(filepath.Join(h.bin, "gearbox"), "--agent", "unix://"+h.agentSock, "fs", "cat", "bench-files:blob")
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("fs cat: %v (%d bytes)", err, out.Len())
		}
		api = append(api, float64(size)/time.Since(start).Seconds()/1e6)
		start = time.Now()
		cmd = exec.Command("cat", host)
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		direct = append(direct, float64(size)/time.Since(start).Seconds()/1e6)
	}
	a, d := median(api), median(direct)
	report(t, "reading a 64 MiB sandbox file (median of 5)\n  gearbox fs cat (ReadFile): %.0f MB/s\n  cat on the host:           %.0f MB/s\n  ratio: %.2f", a, d, a/d)
}

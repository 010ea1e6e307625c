package filelog

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// lockExclusive has another process hold an exclusive flock on f, as
// gearbox-logger does for its whole life.
func lockExclusive(t *testing.T, f *os.File) {
	t.Helper()
	cmd := exec.Command("flock", "-x", f.Name(), "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatalf("flock(1) from util-linux is needed for this test: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for range 500 {
		// A shared, non-blocking try fails once the child holds the lock.
		if exec.Command("flock", "-n", "-s", f.Name(), "true").Run() != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the child never took the lock")
}

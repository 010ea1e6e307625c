package filelog

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/loggertest"
)

// loggerBinary links this test binary as gearbox-logger (TestMain, in
// main_test.go, runs it as one).
func loggerBinary(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "gearbox-logger")
	if err := os.Symlink(exe, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestContract(t *testing.T) {
	bin := loggerBinary(t)
	t.Run("sandbox", func(t *testing.T) {
		sandboxes := t.TempDir()
		l, err := New(bin, t.TempDir(), sandboxes, false)
		if err != nil {
			t.Fatal(err)
		}
		loggertest.Run(t, l, sandboxes, logger.Options{})
	})
	t.Run("logrotate", func(t *testing.T) {
		sandboxes := t.TempDir()
		l, err := New(bin, t.TempDir(), sandboxes, true)
		if err != nil {
			t.Fatal(err)
		}
		// Rotates every 4 KiB and keeps all the suite writes.
		loggertest.Run(t, l, sandboxes, logger.Options{MaxSize: 4 << 10, MaxFiles: 64})
	})
}

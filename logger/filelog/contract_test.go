package filelog

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/loggertest"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// TestMain lets this test binary be gearbox-logger: the contract suite
// starts it, as the shim would, through a link named gearbox-logger.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "gearbox-logger" {
		os.Exit(shimlog.Main(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// loggerBinary links this test binary as gearbox-logger.
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
		l, err := New(bin, t.TempDir(), false)
		if err != nil {
			t.Fatal(err)
		}
		loggertest.Run(t, l, logger.Options{})
	})
	t.Run("logrotate", func(t *testing.T) {
		l, err := New(bin, t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		// Rotates every 4 KiB and keeps all the suite writes.
		loggertest.Run(t, l, logger.Options{MaxSize: 4 << 10, MaxFiles: 64})
	})
}

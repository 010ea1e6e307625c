package filelog

import (
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"

	"github.com/gearboxd/gearbox/logger/shimlog"
)

// TestMain fails the package's tests when one leaves a goroutine running.
// Started through a link named gearbox-logger, the test binary is
// gearbox-logger: the contract suite starts it as the shim would.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "gearbox-logger" {
		os.Exit(shimlog.Main(os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

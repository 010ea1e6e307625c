package containerd

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"

	"github.com/containerd/cgroups/v3"

	"github.com/gearboxd/gearbox/containerizer"
)

const runcShimType = "io.containerd.runc.v2"

// shimBinary is the binary containerd runs for a shim type:
// io.containerd.runc.v2 → containerd-shim-runc-v2.
func shimBinary(typ string) string {
	parts := strings.Split(typ, ".")
	if len(parts) < 2 {
		return ""
	}
	return "containerd-shim-" + parts[len(parts)-2] + "-" + parts[len(parts)-1]
}

// checkRuntimes finds which profiles can run on this host. It looks for the
// shim and the runtime binary, asks the runtime its version, and knows one
// incompatibility measured here: crun refuses hybrid cgroup hierarchies.
func checkRuntimes(profiles map[string]RuntimeProfile) map[string]containerizer.Runtime {
	out := map[string]containerizer.Runtime{}
	hybrid := cgroups.Mode() == cgroups.Hybrid
	for name, p := range profiles {
		rt := containerizer.Runtime{Name: name, Type: p.Type, Binary: p.Binary, Available: true}
		unavailable := func(format string, a ...any) {
			rt.Available = false
			rt.UnavailableReason = fmt.Sprintf(format, a...)
		}
		if shim := shimBinary(p.Type); shim == "" {
			unavailable("shim type %q is not of the form io.containerd.NAME.VERSION", p.Type)
		} else if _, err := exec.LookPath(shim); err != nil {
			unavailable("shim %s for type %s is not installed", shim, p.Type)
		}
		if rt.Available && p.Binary != "" {
			path, err := exec.LookPath(p.Binary)
			if err != nil {
				unavailable("OCI runtime binary %q is not installed (apt-get install %s?)", p.Binary, p.Binary)
			} else {
				out, err := exec.Command(path, "--version").Output()
				switch {
				case err != nil:
					unavailable("%s --version failed: %v", path, err)
				case hybrid && bytes.HasPrefix(out, []byte("crun")):
					unavailable("crun cannot run on a host with hybrid cgroups (v1 controllers with a v2 tree): boot with systemd.unified_cgroup_hierarchy=1 or use runc")
				}
			}
		}
		out[name] = rt
	}
	return out
}

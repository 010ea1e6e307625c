package leaderconn

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
)

// ParseList splits a comma-separated list of master addresses (a flag,
// GEARBOX_MASTER, the agent's config key master) and checks each entry; an
// error names the bad entry.
func ParseList(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("no master address: give host:port, or several separated by commas (a:5050,b:5050,c:5050)")
	}
	var out []string
	for i, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if err := CheckAddress(a); err != nil {
			return nil, fmt.Errorf("master address %d of %d (%q): %w", i+1, strings.Count(s, ",")+1, a, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// CheckAddress checks one master address: host:port, tcp://host:port,
// dns:///host:port, or unix:///absolute/path (a master on this host).
func CheckAddress(a string) error {
	if a == "" {
		return fmt.Errorf("empty entry: remove the extra comma")
	}
	if p, ok := strings.CutPrefix(a, "unix://"); ok {
		if !filepath.IsAbs(p) {
			return fmt.Errorf("the socket path must be absolute (unix:///run/gearbox-master.sock)")
		}
		return nil
	}
	hp := hostPort(a)
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return fmt.Errorf("not host:port, tcp://host:port or unix:///path: %v", err)
	}
	if host == "" {
		return fmt.Errorf("no host before the port")
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// hostPort is the host:port an address names (itself for a unix socket):
// the key a leader's hint, which is host:port, is matched against.
func hostPort(a string) string {
	for _, p := range []string{"tcp://", "dns:///", "passthrough:///"} {
		if rest, ok := strings.CutPrefix(a, p); ok {
			return rest
		}
	}
	return a
}

// target is the gRPC target for an address.
func target(a string) string {
	if strings.HasPrefix(a, "unix://") || strings.HasPrefix(a, "dns:///") || strings.HasPrefix(a, "passthrough:///") {
		return a
	}
	return "dns:///" + hostPort(a)
}

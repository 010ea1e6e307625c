package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// networkFlags are --network, --hostname and -p/--publish, Docker's.
type networkFlags struct {
	network  string
	hostname string
	publish  []string
}

func addNetworkFlags(fs *pflag.FlagSet) *networkFlags {
	f := &networkFlags{}
	fs.StringVar(&f.network, "network", "", "network: host, none or a CNI network of the agent (default: the agent's default_network)")
	fs.StringVar(&f.hostname, "hostname", "", "the container's hostname off the host network (default: its ID)")
	fs.StringArrayVarP(&f.publish, "publish", "p", nil, "map a host port to a container port: HOSTPORT:CONTAINERPORT[/tcp|udp], or CONTAINERPORT[/tcp|udp] for a host port the agent picks")
	return f
}

// apply puts the flags into req.
func (f *networkFlags) apply(req *agentv1.LaunchContainerRequest) error {
	req.Network, req.Hostname = f.network, f.hostname
	for _, p := range f.publish {
		pm, err := parsePortMapping(p)
		if err != nil {
			return err
		}
		req.PortMappings = append(req.PortMappings, pm)
	}
	return nil
}

// parsePortMapping reads HOSTPORT:CONTAINERPORT[/PROTO] or
// CONTAINERPORT[/PROTO].
func parsePortMapping(s string) (*typesv1.PortMapping, error) {
	bad := func(why string) error {
		return fmt.Errorf("-p %q: %s; write HOSTPORT:CONTAINERPORT[/tcp|udp] or CONTAINERPORT[/tcp|udp]", s, why)
	}
	ports, proto, hasProto := strings.Cut(s, "/")
	if !hasProto {
		proto = "tcp"
	}
	if proto != "tcp" && proto != "udp" {
		return nil, bad(fmt.Sprintf("protocol %q is neither tcp nor udp", proto))
	}
	hostStr, ctrStr, both := strings.Cut(ports, ":")
	if !both {
		hostStr, ctrStr = "", hostStr
	}
	port := func(v string) (uint32, error) {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil || n < 1 || n > 65535 {
			return 0, bad(fmt.Sprintf("port %q is not in 1-65535", v))
		}
		return uint32(n), nil
	}
	pm := &typesv1.PortMapping{Protocol: proto}
	var err error
	if pm.ContainerPort, err = port(ctrStr); err != nil {
		return nil, err
	}
	if both {
		if pm.HostPort, err = port(hostStr); err != nil {
			return nil, err
		}
	}
	return pm, nil
}

// formatPorts shows mappings as Docker's ps does: 31000->8080/tcp.
func formatPorts(pms []*typesv1.PortMapping) string {
	var out []string
	for _, pm := range pms {
		out = append(out, fmt.Sprintf("%d->%d/%s", pm.GetHostPort(), pm.GetContainerPort(), pm.GetProtocol()))
	}
	return strings.Join(out, ", ")
}

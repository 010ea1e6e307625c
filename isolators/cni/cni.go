// Package cni is the built-in network/cni isolator: containers on named CNI
// networks (Mesos's network/cni isolator), through libcni and the standard
// plugins (Debian's containernetworking-plugins).
//
//	Prepare  create the container's network namespace (a file bind-mounted
//	         under the state dir, so it outlives the agent), CNI ADD
//	         (loopback, then the network with its port mappings), write its
//	         hosts, hostname and resolv.conf; the spec joins that namespace
//	         and mounts those files read-only
//	Detach   when its process exited: CNI DEL, the namespace unmounted
//	         (its IP and host ports are free again)
//	Cleanup  Detach, then its state dir goes; idempotent
//	Recover  CNI CHECK for running containers; Cleanup of every other
//	         container the state dir knows
//
// The network "none" needs no CNI: the runtime makes a namespace of its own
// with only lo up.
//
// Everything lives under Config.StateDir, outside any sandbox:
// containers/<id>/{state.json,hosts,hostname,resolv.conf,netns/…}, the
// libcni cache (cache/) and the default network's IPAM store (ipam/).
package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/containerd/v2/pkg/netns"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sync/errgroup"

	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
)

// Name is how the agent's config names this isolator.
const Name = "network/cni"

// DefaultNetwork is the bridge network made when none of that name is
// configured.
const DefaultNetwork = "gearbox"

// Package is the Debian package that has the standard plugins.
const Package = "containernetworking-plugins"

// ifName is the container's interface on its network.
const ifName = "eth0"

// Config configures the isolator.
type Config struct {
	// ConfDir holds .conflist (and .conf) files, one network each; "": none.
	ConfDir string
	// BinDirs are where the plugins are (default /usr/lib/cni).
	BinDirs []string
	// StateDir holds namespaces, the files containers see and the cache;
	// under the agent's run dir, so that a reboot clears it with the
	// namespaces.
	StateDir string
	// Subnet and Bridge shape the default network "gearbox".
	Subnet string
	Bridge string
	DNS    DNS
	Log    *slog.Logger
}

// DNS is what a container's resolv.conf says (Mesos's
// --default_container_dns). No servers: the host's, minus loopback ones.
type DNS struct {
	Servers []string
	Search  []string
	Options []string
}

// Isolator is the network/cni isolator.
type Isolator struct {
	cfg      Config
	cni      *libcni.CNIConfig
	networks map[string]*libcni.NetworkConfigList
	loopback *libcni.PluginConfig
	resolv   []byte
	log      *slog.Logger
	mu       sync.Mutex // serialises the state of one container at a time
	busy     map[string]*sync.Mutex
}

var _ isolators.Networker = (*Isolator)(nil)

// New loads the networks. A network file that does not parse is an error
// that names it.
func New(cfg Config) (*Isolator, error) {
	if len(cfg.BinDirs) == 0 {
		cfg.BinDirs = []string{"/usr/lib/cni"}
	}
	if cfg.Subnet == "" {
		cfg.Subnet = "10.89.0.0/16"
	}
	if cfg.Bridge == "" {
		cfg.Bridge = "gearbox0"
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.StateDir == "" {
		return nil, errors.New("cni: no state dir")
	}
	if _, _, err := net.ParseCIDR(cfg.Subnet); err != nil {
		return nil, fmt.Errorf("the default network's subnet (cni_subnet): %w", err)
	}
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "containers"), 0o711); err != nil {
		return nil, fmt.Errorf("creating the CNI state dir: %w", err)
	}
	i := &Isolator{cfg: cfg, log: cfg.Log, networks: map[string]*libcni.NetworkConfigList{}, busy: map[string]*sync.Mutex{}}
	// The exec is given, not left to libcni to make on first use: it does
	// that without a lock, a data race between concurrent launches.
	i.cni = libcni.NewCNIConfigWithCacheDir(cfg.BinDirs, filepath.Join(cfg.StateDir, "cache"),
		&invoke.DefaultExec{RawExec: &invoke.RawExec{Stderr: os.Stderr}, PluginDecoder: version.PluginDecoder{}})
	if err := i.loadNetworks(); err != nil {
		return nil, err
	}
	lo, err := libcni.NetworkPluginConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"gearbox-loopback","type":"loopback"}`))
	if err != nil {
		return nil, err
	}
	i.loopback = lo
	resolv, err := resolvConf(cfg.DNS)
	if err != nil {
		return nil, err
	}
	i.resolv = resolv
	return i, nil
}

// loadNetworks reads ConfDir and adds the default network unless a file
// names one "gearbox".
func (i *Isolator) loadNetworks() error {
	if i.cfg.ConfDir != "" {
		files, err := libcni.ConfFiles(i.cfg.ConfDir, []string{".conflist", ".conf"})
		if err != nil {
			return fmt.Errorf("reading CNI networks in %s (cni_config_dir): %w", i.cfg.ConfDir, err)
		}
		for _, f := range files {
			var list *libcni.NetworkConfigList
			if strings.HasSuffix(f, ".conflist") {
				list, err = libcni.NetworkConfFromFile(f)
			} else {
				var conf *libcni.PluginConfig
				if conf, err = libcni.NetworkPluginConfFromBytes(mustRead(f)); err == nil {
					list, err = libcni.ConfListFromConf(conf)
				}
			}
			if err != nil {
				return fmt.Errorf("CNI network file %s: %w", f, err)
			}
			if list.Name == isolators.NetworkHost || list.Name == isolators.NetworkNone {
				return fmt.Errorf("CNI network file %s: the name %q is reserved", f, list.Name)
			}
			if _, dup := i.networks[list.Name]; dup {
				return fmt.Errorf("CNI network file %s: a network named %q is already configured", f, list.Name)
			}
			i.networks[list.Name] = list
		}
	}
	if _, ok := i.networks[DefaultNetwork]; !ok {
		list, err := libcni.NetworkConfFromBytes(defaultConflist(i.cfg.Subnet, i.cfg.Bridge, filepath.Join(i.cfg.StateDir, "ipam")))
		if err != nil {
			return fmt.Errorf("the default network %q (cni_subnet %q): %w", DefaultNetwork, i.cfg.Subnet, err)
		}
		i.networks[DefaultNetwork] = list
	}
	return nil
}

func mustRead(f string) []byte {
	b, _ := os.ReadFile(f)
	return b
}

// defaultConflist is the default network: a bridge with host-local IPAM,
// masquerading, port mappings (whose SNAT makes them reachable from the
// host's 127.0.0.1: portmap sets route_localnet on the bridge) and the
// firewall plugin's forward rules.
func defaultConflist(subnet, bridge, dataDir string) []byte {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       DefaultNetwork,
		"plugins": []any{
			map[string]any{
				"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": true, "hairpinMode": true,
				"ipam": map[string]any{
					"type": "host-local", "dataDir": dataDir,
					"ranges": [][]map[string]string{{{"subnet": subnet}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
			map[string]any{"type": "firewall", "backend": "iptables"},
		},
	}
	b, _ := json.Marshal(conf)
	return b
}

func (i *Isolator) Name() string { return Name }

// Networks are none and the CNI networks' names, sorted.
func (i *Isolator) Networks() []string {
	names := []string{isolators.NetworkNone}
	for n := range i.networks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// state is what the isolator keeps of a container, in its state dir.
type state struct {
	Network      string                  `json:"network"`
	Hostname     string                  `json:"hostname"`
	NetNS        string                  `json:"netns,omitempty"`
	PortMappings []isolators.PortMapping `json:"port_mappings,omitempty"`
	IPs          []string                `json:"ips,omitempty"`
	Attached     bool                    `json:"attached"`
}

func (i *Isolator) dir(id string) string { return filepath.Join(i.cfg.StateDir, "containers", id) }

func (i *Isolator) readState(id string) (state, bool, error) {
	var st state
	b, err := os.ReadFile(filepath.Join(i.dir(id), "state.json"))
	if errors.Is(err, os.ErrNotExist) {
		return st, false, nil
	}
	if err != nil {
		return st, false, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, false, fmt.Errorf("network state of container %s: %w", id, err)
	}
	return st, true, nil
}

func (i *Isolator) writeState(id string, st state) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := filepath.Join(i.dir(id), "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(i.dir(id), "state.json"))
}

// lock serialises the operations on one container.
func (i *Isolator) lock(id string) func() {
	i.mu.Lock()
	m, ok := i.busy[id]
	if !ok {
		m = &sync.Mutex{}
		i.busy[id] = m
	}
	i.mu.Unlock()
	m.Lock()
	return m.Unlock
}

func (i *Isolator) forget(id string) {
	i.mu.Lock()
	delete(i.busy, id)
	i.mu.Unlock()
}

// rt is the CNI runtime config of a container.
func rt(id, nsPath string, pms []isolators.PortMapping) *libcni.RuntimeConf {
	r := &libcni.RuntimeConf{ContainerID: id, NetNS: nsPath, IfName: ifName}
	if len(pms) > 0 {
		var caps []map[string]any
		for _, pm := range pms {
			caps = append(caps, map[string]any{"hostPort": int(pm.HostPort), "containerPort": int(pm.ContainerPort), "protocol": pm.Protocol})
		}
		r.CapabilityArgs = map[string]any{"portMappings": caps}
	}
	return r
}

// Check validates a network request without attaching anything.
func (i *Isolator) Check(n isolators.Network) error {
	if n.IsHost() {
		if len(n.PortMappings) > 0 {
			return errs.New(errdefs.ErrInvalidArgument, "port mappings need a network of the container's own: on the host network it binds the host's ports itself (use --network %s)", DefaultNetwork)
		}
		return nil
	}
	if n.Name != isolators.NetworkNone {
		list, ok := i.networks[n.Name]
		if !ok {
			return errs.New(errdefs.ErrInvalidArgument, "unknown network %q: this agent has host, %s", n.Name, strings.Join(i.Networks(), ", "))
		}
		if err := i.plugins(list); err != nil {
			return err
		}
	} else if len(n.PortMappings) > 0 {
		return errs.New(errdefs.ErrInvalidArgument, "port mappings on network none reach nothing: use a CNI network such as %s", DefaultNetwork)
	}
	if err := CheckHostname(n.Hostname); err != nil {
		return err
	}
	return CheckPortMappings(n.PortMappings)
}

// CheckHostname refuses a hostname the kernel or resolvers would not take.
func CheckHostname(h string) error {
	if h == "" {
		return nil
	}
	if len(h) > 63 {
		return errs.New(errdefs.ErrInvalidArgument, "hostname %q is longer than 63 characters", h)
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return errs.New(errdefs.ErrInvalidArgument, "hostname %q: write labels of letters, digits and inner hyphens, joined by dots", h)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return errs.New(errdefs.ErrInvalidArgument, "hostname %q: write labels of letters, digits and inner hyphens, joined by dots", h)
			}
		}
	}
	return nil
}

// CheckPortMappings refuses a malformed mapping and a host port mapped twice.
func CheckPortMappings(pms []isolators.PortMapping) error {
	seen := map[string]bool{}
	for _, pm := range pms {
		if pm.Protocol != "tcp" && pm.Protocol != "udp" {
			return errs.New(errdefs.ErrInvalidArgument, "port mapping %d:%d: protocol %q: use tcp or udp", pm.HostPort, pm.ContainerPort, pm.Protocol)
		}
		if pm.ContainerPort == 0 {
			return errs.New(errdefs.ErrInvalidArgument, "port mapping %d:%d/%s: the container port must be 1-65535", pm.HostPort, pm.ContainerPort, pm.Protocol)
		}
		if pm.HostPort == 0 {
			continue
		}
		key := fmt.Sprintf("%d/%s", pm.HostPort, pm.Protocol)
		if seen[key] {
			return errs.New(errdefs.ErrInvalidArgument, "host port %s is mapped twice", key)
		}
		seen[key] = true
	}
	return nil
}

// plugins says which of a network's plugins are missing, with what to do.
func (i *Isolator) plugins(list *libcni.NetworkConfigList) error {
	var missing []string
	types := []string{"loopback"}
	for _, p := range list.Plugins {
		types = append(types, p.Network.Type)
	}
	for _, t := range types {
		found := false
		for _, d := range i.cfg.BinDirs {
			if st, err := os.Stat(filepath.Join(d, t)); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return errs.New(errdefs.ErrFailedPrecondition, "network %q needs the CNI plugins %s, not found in %s: install the Debian package %s (or set cni_bin_dir)",
			list.Name, strings.Join(missing, ", "), strings.Join(i.cfg.BinDirs, ":"), Package)
	}
	return nil
}

// Prepare attaches the container to its network before it is created and
// returns the spec's changes: its namespace, hostname and files.
func (i *Isolator) Prepare(ctx context.Context, c isolators.Container) (opts []oci.SpecOpts, err error) {
	n := c.Network
	if n.IsHost() {
		return nil, nil
	}
	if err := i.Check(n); err != nil {
		return nil, err
	}
	var list *libcni.NetworkConfigList
	if n.Name != isolators.NetworkNone {
		list = i.networks[n.Name]
		if err := i.plugins(list); err != nil {
			return nil, err
		}
	}
	defer i.lock(c.ID)()
	st := state{Network: n.Name, Hostname: n.Hostname, PortMappings: n.PortMappings}
	if st.Hostname == "" {
		st.Hostname = hostnameOf(c.ID)
	}
	dir := i.dir(c.ID)
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, fmt.Errorf("creating the network state of container %s: %w", c.ID, err)
	}
	defer func() {
		if err != nil {
			i.teardown(context.WithoutCancel(ctx), c.ID)
		}
	}()
	nsOpt := specs.LinuxNamespace{Type: specs.NetworkNamespace}
	if list != nil {
		if st.IPs, st.NetNS, err = i.attach(ctx, c.ID, list, &st); err != nil {
			return nil, err
		}
		nsOpt.Path = st.NetNS
	}
	if err := i.writeFiles(c.ID, st); err != nil {
		return nil, err
	}
	if err := i.writeState(c.ID, st); err != nil {
		return nil, fmt.Errorf("recording the network of container %s: %w", c.ID, err)
	}
	ro := []string{"rbind", "ro", "nosuid", "nodev", "noexec"}
	return []oci.SpecOpts{
		oci.WithLinuxNamespace(nsOpt),
		oci.WithHostname(st.Hostname),
		oci.WithMounts([]specs.Mount{
			{Destination: "/etc/hosts", Type: "bind", Source: filepath.Join(dir, "hosts"), Options: ro},
			{Destination: "/etc/hostname", Type: "bind", Source: filepath.Join(dir, "hostname"), Options: ro},
			{Destination: "/etc/resolv.conf", Type: "bind", Source: filepath.Join(dir, "resolv.conf"), Options: ro},
		}),
	}, nil
}

// attach creates the namespace and runs CNI ADD: loopback, then the
// network. The state is written first, so that an agent that dies midway
// finds and releases what was made.
func (i *Isolator) attach(ctx context.Context, id string, list *libcni.NetworkConfigList, st *state) ([]string, string, error) {
	ns, err := netns.NewNetNS(filepath.Join(i.dir(id), "netns"))
	if err != nil {
		return nil, "", fmt.Errorf("creating the network namespace of container %s: %w", id, err)
	}
	st.NetNS, st.Attached = ns.GetPath(), true
	if err := i.writeState(id, *st); err != nil {
		return nil, "", fmt.Errorf("recording the network of container %s: %w", id, err)
	}
	// lo and eth0 are independent: brought up at once, one plugin run
	// sooner.
	var g errgroup.Group
	g.Go(func() error {
		if _, err := i.cni.AddNetwork(ctx, i.loopback, rt(id, st.NetNS, nil)); err != nil {
			return fmt.Errorf("bringing up lo of container %s: %w", id, err)
		}
		return nil
	})
	res, err := i.cni.AddNetworkList(ctx, list, rt(id, st.NetNS, st.PortMappings))
	if werr := g.Wait(); err == nil && werr != nil {
		return nil, "", werr
	}
	if err != nil {
		return nil, "", fmt.Errorf("attaching container %s to network %q: %w", id, list.Name, err)
	}
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, "", fmt.Errorf("reading the result of network %q: %w", list.Name, err)
	}
	var ips []string
	for _, ip := range r.IPs {
		ips = append(ips, ip.Address.IP.String())
	}
	return ips, st.NetNS, nil
}

// hostnameOf makes a hostname of a container ID: what the kernel takes,
// with characters a resolver would refuse turned into hyphens.
func hostnameOf(id string) string {
	b := []byte(id)
	for k, r := range b {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
			b[k] = '-'
		}
	}
	if h := strings.Trim(string(b[:min(len(b), 63)]), "-"); h != "" {
		return h
	}
	return "container"
}

// writeFiles writes the hosts, hostname and resolv.conf the container sees.
func (i *Isolator) writeFiles(id string, st state) error {
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if len(st.IPs) == 0 {
		hosts += "127.0.1.1\t" + st.Hostname + "\n"
	}
	for _, ip := range st.IPs {
		hosts += ip + "\t" + st.Hostname + "\n"
	}
	dir := i.dir(id)
	for name, data := range map[string][]byte{"hosts": []byte(hosts), "hostname": []byte(st.Hostname + "\n"), "resolv.conf": i.resolv} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return fmt.Errorf("writing %s of container %s: %w", name, id, err)
		}
	}
	return nil
}

// resolvConf is what containers' resolv.conf says: dns's, or the host's
// without loopback servers (unreachable from a namespace of its own), or
// Docker's fallback when nothing is left.
func resolvConf(dns DNS) ([]byte, error) {
	for _, s := range dns.Servers {
		if net.ParseIP(s) == nil {
			return nil, fmt.Errorf("container_dns servers: %q is not an IP address", s)
		}
	}
	if len(dns.Servers) == 0 {
		host, _ := os.ReadFile("/etc/resolv.conf")
		for _, line := range strings.Split(string(host), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			switch f[0] {
			case "nameserver":
				if ip := net.ParseIP(f[1]); ip != nil && !ip.IsLoopback() {
					dns.Servers = append(dns.Servers, f[1])
				}
			case "search":
				if len(dns.Search) == 0 {
					dns.Search = f[1:]
				}
			case "options":
				if len(dns.Options) == 0 {
					dns.Options = f[1:]
				}
			}
		}
		if len(dns.Servers) == 0 {
			dns.Servers = []string{"8.8.8.8", "8.8.4.4"}
		}
	}
	var b strings.Builder
	for _, s := range dns.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(dns.Search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(dns.Search, " "))
	}
	if len(dns.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(dns.Options, " "))
	}
	return []byte(b.String()), nil
}

// Detach runs CNI DEL and unmounts the namespace; idempotent.
func (i *Isolator) Detach(ctx context.Context, c isolators.Container) error {
	defer i.lock(c.ID)()
	return i.detach(ctx, c.ID)
}

func (i *Isolator) detach(ctx context.Context, id string) error {
	st, ok, err := i.readState(id)
	if err != nil || !ok || !st.Attached {
		return err
	}
	if list, known := i.networks[st.Network]; known {
		if err := i.cni.DelNetworkList(ctx, list, rt(id, st.NetNS, st.PortMappings)); err != nil {
			return fmt.Errorf("detaching container %s from network %q: %w", id, st.Network, err)
		}
	} else {
		i.log.Warn("container is on a network no longer configured: its IP and rules stay until the network comes back", "container_id", id, "network", st.Network)
	}
	if err := netns.LoadNetNS(st.NetNS).Remove(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the network namespace of container %s: %w", id, err)
	}
	st.Attached = false
	return i.writeState(id, st)
}

// teardown detaches a container and removes its state dir.
func (i *Isolator) teardown(ctx context.Context, id string) error {
	if err := i.detach(ctx, id); err != nil {
		return err
	}
	if err := os.RemoveAll(i.dir(id)); err != nil {
		return fmt.Errorf("removing the network state of container %s: %w", id, err)
	}
	return nil
}

// Cleanup detaches the container and forgets it; idempotent.
func (i *Isolator) Cleanup(ctx context.Context, c isolators.Container) error {
	unlock := i.lock(c.ID)
	err := i.teardown(ctx, c.ID)
	unlock()
	if err == nil {
		i.forget(c.ID)
	}
	return err
}

// Recover checks the attachments of the running containers (CNI CHECK)
// and releases those of every other container it knows.
func (i *Isolator) Recover(ctx context.Context, cs []isolators.Container) error {
	running := map[string]bool{}
	for _, c := range cs {
		running[c.ID] = true
	}
	ents, err := os.ReadDir(filepath.Join(i.cfg.StateDir, "containers"))
	if err != nil {
		return fmt.Errorf("reading the CNI state dir: %w", err)
	}
	var errList []error
	for _, e := range ents {
		id := e.Name()
		if !running[id] {
			i.log.Info("releasing the network of a container that is gone", "container_id", id)
			if err := i.Cleanup(ctx, isolators.Container{ID: id}); err != nil {
				errList = append(errList, err)
			}
			continue
		}
		st, ok, err := i.readState(id)
		if err != nil || !ok || !st.Attached {
			continue
		}
		if list, known := i.networks[st.Network]; known {
			if err := i.cni.CheckNetworkList(ctx, list, rt(id, st.NetNS, st.PortMappings)); err != nil {
				i.log.Warn("container's network attachment fails its CNI CHECK", "container_id", id, "network", st.Network, "err", err)
			}
		}
	}
	return errors.Join(errList...)
}

// Attachment is where Prepare put the container.
func (i *Isolator) Attachment(_ context.Context, c isolators.Container) (isolators.Attachment, bool, error) {
	st, ok, err := i.readState(c.ID)
	if err != nil || !ok {
		return isolators.Attachment{}, false, err
	}
	return isolators.Attachment{Network: st.Network, Hostname: st.Hostname, IPs: st.IPs}, true, nil
}

func (i *Isolator) Isolate(context.Context, isolators.Container, int) error { return nil }

func (i *Isolator) Watch(context.Context, isolators.Container) (*isolators.Limitation, error) {
	return nil, nil
}

func (i *Isolator) Update(context.Context, isolators.Container, isolators.Resources) error {
	return nil
}

func (i *Isolator) Usage(context.Context, isolators.Container, *isolators.Usage) error { return nil }

// Status says the container's network and addresses, for inspect.
func (i *Isolator) Status(_ context.Context, c isolators.Container) (map[string]string, error) {
	st, ok, err := i.readState(c.ID)
	if err != nil || !ok {
		return nil, err
	}
	return map[string]string{"network": st.Network, "ips": strings.Join(st.IPs, ","), "hostname": st.Hostname}, nil
}

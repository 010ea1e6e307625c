package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// writeCNIConfigs writes the harness's extra CNI network: one whose plugin
// is missing, for the error that names the package.
func writeCNIConfigs(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "10-broken.conflist"), []byte(`{"cniVersion":"1.0.0","name":"broken","plugins":[{"type":"gearbox-nosuch-plugin"}]}`), 0o644)
}

// launchNet launches a container on the harness's bridge with mappings.
func launchNet(t *testing.T, id, network string, pms []*typesv1.PortMapping, args ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: args}, Network: network, PortMappings: pms,
	})
	if err != nil {
		t.Fatalf("launch %s on %s: %v", id, network, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

// httpd serves body on 8080 with busybox httpd.
func httpd(body string) []string {
	return []string{"sh", "-c", "mkdir -p /tmp/www && echo " + body + " > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"}
}

// get fetches url, retrying while the server comes up.
func get(t *testing.T, url string) string {
	t.Helper()
	cl := &http.Client{Timeout: 2 * time.Second}
	var last error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := cl.Get(url)
		if err != nil {
			last = err
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode == 200 {
			return strings.TrimSpace(string(b))
		}
		last = fmt.Errorf("status %d: %v", resp.StatusCode, err)
	}
	t.Fatalf("GET %s: %v", url, last)
	return ""
}

func hostPortOf(t *testing.T, c *agentv1.Container) uint32 {
	t.Helper()
	if len(c.PortMappings) != 1 || c.PortMappings[0].HostPort == 0 {
		t.Fatalf("container %s: port mappings %v", c.Id, c.PortMappings)
	}
	return c.PortMappings[0].HostPort
}

// Two containers of one image, both on 8080 on the bridge, mapped to two
// host ports (one given, one picked by the agent): each answers on
// 127.0.0.1 with its own content; each reaches the other by IP; each has
// its hostname, /etc/hosts and resolv.conf; ps shows IPs and ports.
func TestNetworkBridgeTwoServers(t *testing.T) {
	p1 := uint32(h.portsLo + 10)
	c1 := launchNet(t, "net-web1", "gearbox", []*typesv1.PortMapping{{HostPort: p1, ContainerPort: 8080, Protocol: "tcp"}}, httpd("one")...)
	c2 := launchNet(t, "net-web2", "gearbox", []*typesv1.PortMapping{{ContainerPort: 8080}}, httpd("two")...)
	p2 := hostPortOf(t, c2)
	if hostPortOf(t, c1) != p1 || p2 < uint32(h.portsLo) || p2 > uint32(h.portsHi) || p2 == p1 {
		t.Fatalf("host ports %d and %d; the agent's are [%d-%d]", p1, p2, h.portsLo, h.portsHi)
	}
	_, subnet, _ := net.ParseCIDR(h.cniSubnet)
	for _, c := range []*agentv1.Container{c1, c2} {
		if c.Network != "gearbox" || len(c.IpAddresses) != 1 || !subnet.Contains(net.ParseIP(c.IpAddresses[0])) {
			t.Fatalf("container %s: network %q, IPs %v (subnet %s)", c.Id, c.Network, c.IpAddresses, h.cniSubnet)
		}
	}
	if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", p1)); got != "one" {
		t.Errorf("127.0.0.1:%d says %q, want one", p1, got)
	}
	if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/", p2)); got != "two" {
		t.Errorf("127.0.0.1:%d says %q, want two", p2, got)
	}
	if r := h.cli("exec", "net-web1", "wget", "-qO-", "http://"+c2.IpAddresses[0]+":8080/"); r.code != 0 || strings.TrimSpace(r.stdout) != "two" {
		t.Errorf("net-web1 fetching net-web2 by IP: %s", r)
	}
	r := h.cli("exec", "net-web1", "sh", "-c", "hostname; cat /etc/hosts; cat /etc/resolv.conf; ip -o -4 addr")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "net-web1\n") || !strings.Contains(r.stdout, c1.IpAddresses[0]+"\tnet-web1") ||
		!strings.Contains(r.stdout, "nameserver") || !strings.Contains(r.stdout, "inet "+c1.IpAddresses[0]+"/") || !strings.Contains(r.stdout, "lo") {
		t.Errorf("net-web1's hostname, hosts, resolv.conf and addresses:\n%s", r)
	}
	// A debug container joins the target's network and sees its files.
	r = h.cli("debug", "--image", testImage, "net-web1", "sh", "-c", "hostname; cat /etc/hosts; ip -o -4 addr; wget -qO- http://127.0.0.1:8080/")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "net-web1\n") || !strings.Contains(r.stdout, c1.IpAddresses[0]+"\tnet-web1") ||
		!strings.Contains(r.stdout, "inet "+c1.IpAddresses[0]+"/") || !strings.HasSuffix(strings.TrimSpace(r.stdout), "one") {
		t.Errorf("debug of net-web1:\n%s", r)
	}
	if r := h.cli("ps"); !strings.Contains(r.stdout, c2.IpAddresses[0]) || !strings.Contains(r.stdout, fmt.Sprintf("%d->8080/tcp", p2)) {
		t.Errorf("ps shows no IP or port:\n%s", r)
	}
	if r := h.cli("inspect", "net-web2"); !strings.Contains(r.stdout, c2.IpAddresses[0]) {
		t.Errorf("inspect shows no IP:\n%s", r)
	}
}

// --network none: a namespace with only lo (up); --network host (the
// default): the host's interfaces, as before.
func TestNetworkNoneAndHost(t *testing.T) {
	r := h.cli("run", "--rm", "--network", "none", testImage, "ip", "-o", "link")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 1 || !strings.Contains(lines[0], ": lo:") || !strings.Contains(lines[0], "UP") {
		t.Errorf("--network none:\n%s", r)
	}
	hostIf := defaultRouteIf(t)
	for _, args := range [][]string{{"run", "--rm", testImage}, {"run", "--rm", "--network", "host", testImage}} {
		r := h.cli(append(args, "ip", "-o", "link")...)
		if r.code != 0 || !strings.Contains(r.stdout, ": "+hostIf+":") {
			t.Errorf("%v: the host's %s is missing:\n%s", args, hostIf, r)
		}
	}
}

// defaultRouteIf is the host's interface of its default route.
func defaultRouteIf(t *testing.T) string {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 2 && f[1] == "00000000" {
			return f[0]
		}
	}
	t.Fatal("the host has no default route")
	return ""
}

// ipamIPs are the addresses the harness's default network holds.
func ipamIPs(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(h.dir, "agent", "run", "cni", "ipam", "gearbox"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var ips []string
	for _, e := range ents {
		if net.ParseIP(e.Name()) != nil {
			ips = append(ips, e.Name())
		}
	}
	return ips
}

// An agent SIGKILLed and restarted keeps its containers reachable; their
// removal frees their IPs. One that exited while the agent was down has
// its IP and host port released at the restart.
func TestNetworkSurvivesAgentSIGKILL(t *testing.T) {
	p := uint32(h.portsLo + 20)
	c := launchNet(t, "net-keep", "gearbox", []*typesv1.PortMapping{{HostPort: p, ContainerPort: 8080, Protocol: "tcp"}}, httpd("kept")...)
	url := fmt.Sprintf("http://127.0.0.1:%d/", p)
	if got := get(t, url); got != "kept" {
		t.Fatalf("before: %q", got)
	}
	dies := launchNet(t, "net-dies", "gearbox", []*typesv1.PortMapping{{HostPort: p + 1, ContainerPort: 8080, Protocol: "tcp"}}, "sleep", "2")
	if err := h.stopAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	waitExit(t, "net-dies", time.Minute)
	for _, ip := range ipamIPs(t) {
		if ip == dies.IpAddresses[0] {
			t.Errorf("IP %s of a container that exited while the agent was down is still held", ip)
		}
	}
	if r := h.cli("run", "-d", "--name", "net-dies-2", "--network", "gearbox", "-p", fmt.Sprintf("%d:80", p+1), testImage, "true"); r.code != 0 {
		t.Errorf("host port %d of a container that exited while the agent was down is still taken: %s", p+1, r)
	}
	h.cli("rm", "-f", "net-dies-2")
	if got := get(t, url); got != "kept" {
		t.Errorf("after the agent's restart: %q", got)
	}
	g := containerOf(t, "net-keep")
	if len(g.IpAddresses) != 1 || g.IpAddresses[0] != c.IpAddresses[0] || hostPortOf(t, g) != p {
		t.Fatalf("after the restart: %v", g)
	}
	// The port stays taken across the restart.
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "net-keep-2", Image: testImage, Network: "gearbox",
		PortMappings: []*typesv1.PortMapping{{HostPort: p, ContainerPort: 80}}, Cmd: &agentv1.StringList{Values: []string{"true"}}})
	if status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), fmt.Sprint(p)) || !strings.Contains(err.Error(), "net-keep") {
		t.Errorf("taking host port %d again after the restart: %v", p, err)
	}
	if _, err := h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "net-keep", Force: true}); err != nil {
		t.Fatal(err)
	}
	for _, ip := range ipamIPs(t) {
		if ip == c.IpAddresses[0] {
			t.Errorf("IP %s is still held after its container was removed", ip)
		}
	}
}

func containerOf(t *testing.T, id string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.GetContainers(ctxT(t), &agentv1.GetContainersRequest{All: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.Containers {
		if c.Id == id {
			return c
		}
	}
	t.Fatalf("no container %s", id)
	return nil
}

// hostCounts are the host's interfaces and firewall rules.
func hostCounts(t *testing.T) (links, rules int) {
	t.Helper()
	out, err := exec.Command("ip", "-o", "link").Output()
	if err != nil {
		t.Fatal(err)
	}
	links = strings.Count(string(out), "\n")
	out, err = exec.Command("iptables-save").Output()
	if err != nil {
		t.Fatalf("iptables-save: %v (apt-get install iptables)", err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, ":") {
			rules++ // counters and comments change by themselves
		}
	}
	return links, rules
}

// 50 create/remove cycles on the bridge, with a picked host port each, end
// where they began: no veth, firewall rule or IP left.
func TestNetworkNoLeaks(t *testing.T) {
	// One container first, so that the bridge and the plugins' chains
	// exist before counting.
	launchNet(t, "net-warm", "gearbox", nil, "true")
	waitExit(t, "net-warm", time.Minute)
	h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "net-warm", Force: true})
	links0, rules0 := hostCounts(t)
	ips0 := len(ipamIPs(t))
	for i := 0; i < 50; i++ {
		id := fmt.Sprintf("net-cycle-%d", i)
		c := launchNet(t, id, "gearbox", []*typesv1.PortMapping{{ContainerPort: 80}}, "sleep", "60")
		if len(c.IpAddresses) != 1 {
			t.Fatalf("%s: IPs %v", id, c.IpAddresses)
		}
		if _, err := h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true}); err != nil {
			t.Fatal(err)
		}
	}
	// And 8 at once: concurrent attachments get distinct IPs and ports,
	// and leave nothing either.
	var wg sync.WaitGroup
	seen := make(chan string, 16)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func(id string) {
			defer wg.Done()
			resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: id, Image: testImage, Network: "gearbox",
				PortMappings: []*typesv1.PortMapping{{ContainerPort: 80}}, Cmd: &agentv1.StringList{Values: []string{"sleep", "60"}}})
			if err != nil {
				t.Errorf("concurrent launch %s: %v", id, err)
				return
			}
			seen <- resp.Container.IpAddresses[0]
			seen <- fmt.Sprint(resp.Container.PortMappings[0].HostPort)
		}(fmt.Sprintf("net-conc-%d", i))
	}
	wg.Wait()
	close(seen)
	for i := 0; i < 8; i++ {
		if _, err := h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: fmt.Sprintf("net-conc-%d", i), Force: true}); err != nil {
			t.Error(err)
		}
	}
	distinct := map[string]bool{}
	for s := range seen {
		distinct[s] = true
	}
	if len(distinct) != 16 {
		t.Errorf("8 concurrent launches: %d distinct IPs and ports of 16", len(distinct))
	}
	links, rules := hostCounts(t)
	if links != links0 || rules != rules0 || len(ipamIPs(t)) != ips0 {
		t.Errorf("after 50 cycles: %d links (were %d), %d iptables rules (were %d), IPs held %v (were %d)", links, links0, rules, rules0, ipamIPs(t), ips0)
	}
}

// Errors a person can act on.
func TestNetworkRefusals(t *testing.T) {
	p := uint32(h.portsLo + 30)
	launchNet(t, "net-holder", "gearbox", []*typesv1.PortMapping{{HostPort: p, ContainerPort: 80}}, "sleep", "60")
	for _, tc := range []struct {
		name    string
		req     *agentv1.LaunchContainerRequest
		code    codes.Code
		mention []string
	}{
		{"unknown network", &agentv1.LaunchContainerRequest{Network: "nosuch"}, codes.InvalidArgument, []string{`"nosuch"`, "gearbox", "none", "host", "broken"}},
		{"plugin missing", &agentv1.LaunchContainerRequest{Network: "broken"}, codes.FailedPrecondition, []string{"gearbox-nosuch-plugin", "containernetworking-plugins"}},
		{"host port taken", &agentv1.LaunchContainerRequest{Network: "gearbox", PortMappings: []*typesv1.PortMapping{{HostPort: p, ContainerPort: 80}}}, codes.AlreadyExists, []string{fmt.Sprint(p), "net-holder"}},
		{"host port outside the resource", &agentv1.LaunchContainerRequest{Network: "gearbox", PortMappings: []*typesv1.PortMapping{{HostPort: 80, ContainerPort: 80}}}, codes.InvalidArgument, []string{"80", "ports"}},
		{"port beyond 65535", &agentv1.LaunchContainerRequest{Network: "gearbox", PortMappings: []*typesv1.PortMapping{{ContainerPort: 70000}}}, codes.InvalidArgument, []string{"70000"}},
		{"bad protocol", &agentv1.LaunchContainerRequest{Network: "gearbox", PortMappings: []*typesv1.PortMapping{{ContainerPort: 80, Protocol: "sctp"}}}, codes.InvalidArgument, []string{"sctp"}},
		{"mapping on the host network", &agentv1.LaunchContainerRequest{Network: "host", PortMappings: []*typesv1.PortMapping{{ContainerPort: 80}}}, codes.InvalidArgument, []string{"port mappings"}},
		{"bad hostname", &agentv1.LaunchContainerRequest{Network: "gearbox", Hostname: "a_b"}, codes.InvalidArgument, []string{"a_b"}},
	} {
		tc.req.ContainerId, tc.req.Image, tc.req.Cmd = "net-refused", testImage, &agentv1.StringList{Values: []string{"true"}}
		_, err := h.client.LaunchContainer(ctxT(t), tc.req)
		if status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.code)
			h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "net-refused", Force: true})
			continue
		}
		for _, m := range tc.mention {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: %q does not mention %q", tc.name, err, m)
			}
		}
	}
	if r := h.cli("run", "--rm", "-p", "80:99999", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "99999") {
		t.Errorf("run -p 80:99999: %s", r)
	}
}

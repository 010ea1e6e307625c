// Package etcdtest starts real etcd members on loopback ports, for the
// tests of gearbox's etcd registry and of replicated masters. It runs
// Debian's etcd-server binary (`etcd` on PATH; hack/install-deps.sh
// installs it): a test that needs etcd fails when it is missing, it is
// never skipped.
//
// Each member has its own data dir under the cluster's dir, so a member
// that is killed and started again comes back with its data, as a real
// member does after a crash.
package etcdtest

import (
	"context"
	"errors"
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
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Cluster is a set of etcd members on 127.0.0.1.
type Cluster struct {
	dir     string
	args    []string
	members []*Member
	mu      sync.Mutex
}

// Member is one etcd process.
type Member struct {
	Name       string
	ClientURL  string
	PeerURL    string
	DataDir    string
	LogPath    string
	cmd        *exec.Cmd
	exited     chan struct{}
	clusterArg string
}

// Start starts n members (1 or 3, usually) with their data under dir and
// waits until every one answers /health. extra are more etcd flags given
// to every member (for example "--max-txn-ops=1024").
func Start(dir string, n int, extra ...string) (*Cluster, error) {
	if _, err := exec.LookPath("etcd"); err != nil {
		return nil, fmt.Errorf("etcd is not installed (Debian's etcd-server package; hack/install-deps.sh installs it): %w", err)
	}
	c := &Cluster{dir: dir, args: extra}
	var peers []string
	for i := range n {
		cp, err := freePort()
		if err != nil {
			return nil, err
		}
		pp, err := freePort()
		if err != nil {
			return nil, err
		}
		m := &Member{
			Name:      fmt.Sprintf("m%d", i),
			ClientURL: fmt.Sprintf("http://127.0.0.1:%d", cp),
			PeerURL:   fmt.Sprintf("http://127.0.0.1:%d", pp),
		}
		m.DataDir = filepath.Join(dir, m.Name)
		m.LogPath = filepath.Join(dir, m.Name+".log")
		c.members = append(c.members, m)
		peers = append(peers, m.Name+"="+m.PeerURL)
	}
	for _, m := range c.members {
		m.clusterArg = strings.Join(peers, ",")
		if err := c.start(m); err != nil {
			c.Stop()
			return nil, err
		}
	}
	for i := range c.members {
		if err := c.WaitHealthy(i, 60*time.Second); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

func (c *Cluster) start(m *Member) error {
	if err := os.MkdirAll(c.dir, 0o700); err != nil {
		return err
	}
	logf, err := os.OpenFile(m.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	args := []string{
		"--name", m.Name,
		"--data-dir", m.DataDir,
		"--listen-client-urls", m.ClientURL,
		"--advertise-client-urls", m.ClientURL,
		"--listen-peer-urls", m.PeerURL,
		"--initial-advertise-peer-urls", m.PeerURL,
		"--initial-cluster", m.clusterArg,
		"--initial-cluster-token", "gearbox-test",
		"--initial-cluster-state", "new",
		// A leader's loss is noticed in about a second rather than the
		// defaults' five, so tests of quorum loss do not wait long.
		"--heartbeat-interval", "100",
		"--election-timeout", "1000",
	}
	args = append(args, c.args...)
	cmd := exec.Command("etcd", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start etcd member %s: %w", m.Name, err)
	}
	m.cmd, m.exited = cmd, make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(m.exited) }()
	return nil
}

// Endpoints are the members' client URLs, in order.
func (c *Cluster) Endpoints() []string {
	var eps []string
	for _, m := range c.members {
		eps = append(eps, m.ClientURL)
	}
	return eps
}

// Members returns the members, in order.
func (c *Cluster) Members() []*Member { return c.members }

// Client returns a client of every member; the caller closes it.
func (c *Cluster) Client() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), DialTimeout: 5 * time.Second})
}

// Kill sends member i SIGKILL and waits for it to exit.
func (c *Cluster) Kill(i int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[i]
	if m.cmd == nil {
		return nil
	}
	m.cmd.Process.Signal(syscall.SIGKILL)
	<-m.exited
	m.cmd = nil
	return nil
}

// Restart starts member i again with its data dir (after Kill) and waits
// until it is healthy; healthy needs a quorum, so bring enough members back.
func (c *Cluster) Restart(i int) error {
	c.mu.Lock()
	m := c.members[i]
	if m.cmd != nil {
		c.mu.Unlock()
		return fmt.Errorf("etcd member %s is running", m.Name)
	}
	// A restarted member rejoins with the data dir; initial-cluster flags
	// are ignored once it has one.
	err := c.start(m)
	c.mu.Unlock()
	return err
}

// WaitHealthy waits until member i answers /health with true (it is part
// of a cluster with a quorum and a leader).
func (c *Cluster) WaitHealthy(i int, within time.Duration) error {
	m := c.members[i]
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var last error
	for {
		if last = health(ctx, m.ClientURL); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("etcd member %s not healthy after %s: %w (log %s: %s)", m.Name, within, last, m.LogPath, tail(m.LogPath))
		case <-m.exitedOrNever():
			return fmt.Errorf("etcd member %s exited (log %s: %s)", m.Name, m.LogPath, tail(m.LogPath))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (m *Member) exitedOrNever() <-chan struct{} {
	if m.exited == nil {
		return nil
	}
	return m.exited
}

func health(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if !strings.Contains(string(b), `"health":"true"`) {
		return errors.New(strings.TrimSpace(string(b)))
	}
	return nil
}

// Stop kills every member that runs. The data stays under the dir.
func (c *Cluster) Stop() {
	for i := range c.members {
		c.Kill(i)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

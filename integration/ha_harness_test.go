package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gearboxd/gearbox/internal/etcdtest"
	"github.com/gearboxd/gearbox/master/store"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// A replicated master for a test (issue 18): a real 3-member etcd on
// loopback, three `gearbox master --etcd-endpoints …` processes, each with
// its own work dir, socket and TCP address, and real agents (on the
// package's containerd, as the other master tests' agents) given all three
// masters. The masters serve plaintext TCP on loopback with --insecure, as
// masters on a private network would: agents, frameworks and the CLI reach
// every one of them by host:port, the address a standby names as the
// leader's.

// haTTL is the masters' --election-ttl: short, so that a dead leader's
// lease ends soon.
const haTTL = 2 * time.Second

type haCluster struct {
	t       *testing.T
	etcd    *etcdtest.Cluster
	kv      *clientv3.Client // straight to etcd, to read the registry behind the masters' backs
	prefix  string
	masters []*masterProc
	agents  []*clusterAgent
}

// haOptions say what else a test needs of its cluster.
type haOptions struct {
	agents int      // real agents, each given all three masters
	image  bool     // import the test image into each agent
	args   []string // more flags for every master
	// beforeMasters runs once etcd is up, before any master starts.
	beforeMasters func(c *haCluster)
}

func startHA(t *testing.T, o haOptions) *haCluster {
	t.Helper()
	dir := t.TempDir()
	ec, err := etcdtest.Start(filepath.Join(dir, "etcd"), 3)
	if err != nil {
		t.Fatal(err)
	}
	c := &haCluster{t: t, etcd: ec, prefix: "/gearbox-it/" + strings.ReplaceAll(t.Name(), "/", "-") + "/"}
	t.Cleanup(func() {
		if t.Failed() {
			for _, m := range ec.Members() {
				t.Logf("etcd %s log:\n%s", m.Name, tail(m.LogPath, 15))
			}
		}
		ec.Stop()
	})
	if c.kv, err = ec.Client(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.kv.Close() })
	if o.beforeMasters != nil {
		o.beforeMasters(c)
	}
	for i := range 3 {
		c.masters = append(c.masters, c.newMaster(t, fmt.Sprintf("m%d", i), o.args))
	}
	for _, m := range c.masters {
		m.start(t)
	}
	for i := range c.masters {
		c.waitServing(i, 30*time.Second)
	}
	c.waitLeader(30 * time.Second)
	for i := range o.agents {
		c.agents = append(c.agents, startClusterAgent(t, &masterProc{addr: c.addrs()}, fmt.Sprintf("ha%d", i), fmt.Sprintf("rack:r%d", i), o.image))
	}
	return c
}

// newMaster makes (without starting) a master on etcd with its own dirs.
func (c *haCluster) newMaster(t *testing.T, name string, extra []string) *masterProc {
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	mport, _ := freePort()
	dir := filepath.Join(t.TempDir(), name)
	os.MkdirAll(dir, 0o700)
	m := &masterProc{listen: fmt.Sprintf("127.0.0.1:%d", port), metrics: fmt.Sprintf("127.0.0.1:%d", mport), dir: dir,
		log: filepath.Join(dir, "master.log"), sock: filepath.Join(dir, "master.sock")}
	m.addr = m.listen
	m.args = append([]string{"--socket", m.sock, "--insecure", "--agent-ping-timeout", "1s", "--max-agent-ping-timeouts", "3",
		"--allocation-interval", "200ms",
		"--etcd-endpoints", strings.Join(c.etcd.Endpoints(), ","), "--etcd-prefix", c.prefix,
		"--election-ttl", haTTL.String()}, extra...)
	m.conn, _ = grpc.NewClient(m.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	m.c = masterv1.NewOperatorClient(m.conn)
	t.Cleanup(func() {
		if m.cmd != nil {
			m.cmd.Process.Signal(syscall.SIGCONT)
		}
		m.conn.Close()
		m.stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("master %s (%s) log:\n%s", name, m.listen, tail(m.log, 40))
		}
	})
	return m
}

// addrs is the masters' list as agents, frameworks and the CLI take it.
func (c *haCluster) addrs() string {
	var a []string
	for _, m := range c.masters {
		a = append(a, m.listen)
	}
	return strings.Join(a, ",")
}

// masters asks master i for the list of masters.
func (c *haCluster) mastersOf(i int) ([]*masterv1.MasterInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := c.masters[i].c.GetMasters(ctx, &masterv1.GetMastersRequest{})
	return r.GetMasters(), err
}

// waitServing waits until master i answers GetMasters (a standby does).
func (c *haCluster) waitServing(i int, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		_, err := c.mastersOf(i)
		if err == nil {
			return
		}
		select {
		case err := <-c.masters[i].done:
			c.masters[i].done <- err
			c.t.Fatalf("master %d exited: %v\n%s", i, err, tail(c.masters[i].log, 30))
		default:
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("master %d does not answer GetMasters: %v\n%s", i, err, tail(c.masters[i].log, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// index is the master listening on addr, or -1.
func (c *haCluster) index(addr string) int {
	for i, m := range c.masters {
		if m.listen == addr {
			return i
		}
	}
	return -1
}

// leaderSeen is the leader as the running masters other than except
// (-1: none) see it: the one every one that answers names, and -1 while
// they name none or disagree.
func (c *haCluster) leaderSeen(except int) int {
	leader, answers := -1, 0
	for i, m := range c.masters {
		if i == except || m.cmd == nil {
			continue
		}
		ms, err := c.mastersOf(i)
		if err != nil {
			continue
		}
		answers++
		named := -1
		for _, mi := range ms {
			if mi.Leader {
				if named != -1 {
					return -1 // two leaders in one answer
				}
				named = c.index(mi.Address)
			}
		}
		if named == -1 || (leader != -1 && named != leader) {
			return -1
		}
		leader = named
	}
	if answers == 0 {
		return -1
	}
	return leader
}

// leader waits until the masters agree on a leader that takes an
// operator's call, and returns it.
func (c *haCluster) leader() int { return c.waitLeader(30 * time.Second) }

func (c *haCluster) waitLeader(within time.Duration) int {
	c.t.Helper()
	i, err := c.pollLeader(-1, within)
	if err != nil {
		c.t.Fatal(err)
	}
	return i
}

// pollLeader waits until the running masters other than old agree on a
// leader (not old) that answers GetAgents.
func (c *haCluster) pollLeader(old int, within time.Duration) (int, error) {
	deadline := time.Now().Add(within)
	for {
		i := c.leaderSeen(old)
		if i >= 0 && i != old && c.masters[i].cmd != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := c.masters[i].c.GetAgents(ctx, &masterv1.GetAgentsRequest{})
			cancel()
			if err == nil {
				return i, nil
			}
		}
		if time.Now().After(deadline) {
			var views []string
			for k := range c.masters {
				ms, err := c.mastersOf(k)
				views = append(views, fmt.Sprintf("master %d: %v %v", k, ms, err))
			}
			return -1, fmt.Errorf("no leader (other than %d) within %s:\n%s", old, within, strings.Join(views, "\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killMaster sends master i sig; for SIGKILL and SIGTERM it waits for the
// process to end.
func (c *haCluster) killMaster(i int, sig syscall.Signal) {
	m := c.masters[i]
	if sig != syscall.SIGKILL && sig != syscall.SIGTERM {
		m.cmd.Process.Signal(sig)
		return
	}
	m.stop(c.t, sig)
}

// restartMaster starts master i again (after killMaster) and waits until
// it answers.
func (c *haCluster) restartMaster(i int) {
	c.t.Helper()
	c.masters[i].start(c.t)
	c.waitServing(i, 30*time.Second)
}

// cli runs the CLI with --master naming all three masters, in order.
func (c *haCluster) cli(order []int, args ...string) result {
	var a []string
	for _, i := range order {
		a = append(a, c.masters[i].listen)
	}
	m := &masterProc{addr: strings.Join(a, ",")}
	return m.cli(append([]string{"--master", m.addr}, args...)...)
}

// etcdTasks reads the tasks straight from etcd: the store's JSON values
// under PREFIX/tasks/, by ID, with the revision each was last written at.
func (c *haCluster) etcdTasks() (map[string]store.Task, map[string]int64) {
	c.t.Helper()
	tasks, revs := map[string]store.Task{}, map[string]int64{}
	c.etcdRange("tasks/", func(id string, v []byte, rev int64) {
		var tk store.Task
		if err := json.Unmarshal(v, &tk); err != nil {
			c.t.Fatalf("task %s in etcd: %v: %s", id, err, v)
		}
		tasks[id], revs[id] = tk, rev
	})
	return tasks, revs
}

// etcdAgents reads the agents straight from etcd.
func (c *haCluster) etcdAgents() map[string]store.Agent {
	c.t.Helper()
	agents := map[string]store.Agent{}
	c.etcdRange("agents/", func(id string, v []byte, _ int64) {
		var a store.Agent
		if err := json.Unmarshal(v, &a); err != nil {
			c.t.Fatalf("agent %s in etcd: %v: %s", id, err, v)
		}
		agents[id] = a
	})
	return agents
}

func (c *haCluster) etcdRange(sub string, fn func(id string, v []byte, rev int64)) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.kv.Get(ctx, c.prefix+sub, clientv3.WithPrefix())
	if err != nil {
		c.t.Fatalf("reading %s%s from etcd: %v", c.prefix, sub, err)
	}
	for _, kv := range r.Kvs {
		fn(strings.TrimPrefix(string(kv.Key), c.prefix+sub), kv.Value, kv.ModRevision)
	}
}

// etcdKeys lists every key under the prefix written after rev, with its
// revision, for a failure's message.
func (c *haCluster) etcdKeysAfter(rev int64) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.kv.Get(ctx, c.prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, kv := range r.Kvs {
		if kv.ModRevision > rev {
			out = append(out, fmt.Sprintf("%s@%d", kv.Key, kv.ModRevision))
		}
	}
	sort.Strings(out)
	return out
}

// etcdRev is etcd's current revision.
func (c *haCluster) etcdRev() int64 {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.kv.Get(ctx, c.prefix+"nonexistent")
	if err != nil {
		c.t.Fatal(err)
	}
	return r.Header.Revision
}

// containers counts the containers of each ID on the cluster's agents, and
// how many of them run.
func (c *haCluster) containers() (all, running map[string]int) {
	c.t.Helper()
	all, running = map[string]int{}, map[string]int{}
	for _, a := range c.agents {
		r, err := a.c.GetContainers(ctxT(c.t), &agentv1.GetContainersRequest{All: true})
		if err != nil {
			c.t.Fatalf("containers of agent %s: %v", a.name, err)
		}
		for _, ct := range r.Containers {
			all[ct.Id]++
			if ct.Pid != 0 && ct.State.String() == "TASK_RUNNING" {
				running[ct.Id]++
			}
		}
	}
	return all, running
}

// lockedBuffer is an output a running process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// follow starts the CLI with --master naming all three masters (a command
// that runs until stopped, such as events); the test's cleanup stops it.
func (c *haCluster) follow(args ...string) (stdout, stderr *lockedBuffer) {
	c.t.Helper()
	stdout, stderr = &lockedBuffer{}, &lockedBuffer{}
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), append([]string{"--master", c.addrs()}, args...)...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	return stdout, stderr
}

package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/gearboxd/gearbox/internal/etcdtest"
	"github.com/gearboxd/gearbox/master/store"
	"github.com/gearboxd/gearbox/master/store/storetest"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// cluster is a real 3-member etcd on loopback shared by the tests; each
// test keeps its registry under its own prefix.
var cluster *etcdtest.Cluster

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "etcdstore-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cluster, err = etcdtest.Start(dir, 3)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	cluster.Stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

func open(t *testing.T, c *etcdtest.Cluster, prefix string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Endpoints: c.Endpoints(), Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pair opens two Stores on one prefix, as two masters do.
func pair(t *testing.T, prefix string) (*Store, *Store) {
	a, b := open(t, cluster, prefix), open(t, cluster, prefix)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func client(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := cluster.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store { return open(t, cluster, "/contract/") })
}

// viewCloser is a fenced view that closes its store with it, so the
// contract suite can reopen it.
type viewCloser struct {
	store.Store
	s *Store
}

func (v viewCloser) Close() error { return v.s.Close() }

// The contract holds through a fenced view while its key stands.
func TestFencedContract(t *testing.T) {
	resp, err := client(t).Put(context.Background(), "/fenced-contract/leader/m1", "m1")
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, cluster, "/fenced-contract/")
		return viewCloser{Store: s.Fenced("/fenced-contract/leader/m1", rev), s: s}
	})
}

func task(id string) store.Task {
	return store.Task{ID: id, AgentID: "a-1", Image: "busybox", State: typesv1.TaskState_TASK_RUNNING,
		CreatedAt: time.Date(2026, 12, 3, 0, 0, 0, 0, time.UTC)}
}

func taskIDs(t *testing.T, s store.Store) []string {
	t.Helper()
	ts, err := s.Tasks(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, x := range ts {
		ids = append(ids, x.ID)
	}
	return ids
}

// A deposed leader writes nothing: once its election key is deleted, or
// deleted and created again (by the next leader), a fenced Apply fails
// with ErrFenced and leaves the registry as it was.
func TestFencedRefusedOnceKeyChanged(t *testing.T) {
	ctx := context.Background()
	cli := client(t)
	s := open(t, cluster, "/fenced/")
	defer s.Close()
	const key = "/fenced/leader/m1"
	resp, err := cli.Put(ctx, key, "m1")
	if err != nil {
		t.Fatal(err)
	}
	v := s.Fenced(key, resp.Header.Revision)
	if err := v.Apply(ctx, store.Batch{Tasks: []store.Task{task("t-1")}}); err != nil {
		t.Fatalf("apply while the key stands: %v", err)
	}
	// Writing the key again keeps its creation revision: still leading.
	if _, err := cli.Put(ctx, key, "m1 again"); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, store.Batch{Tasks: []store.Task{task("t-2")}}); err != nil {
		t.Fatalf("apply after the key's value changed: %v", err)
	}
	if _, err := cli.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	big := store.Batch{DeleteTasks: []string{"t-1"}}
	for i := range 300 { // several transactions: none may land
		big.Tasks = append(big.Tasks, task(fmt.Sprintf("x-%03d", i)))
	}
	if err := v.Apply(ctx, big); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("apply after the key was deleted: %v, want ErrFenced", err)
	}
	if _, err := cli.Put(ctx, key, "m2"); err != nil {
		t.Fatal(err)
	}
	if err := v.Apply(ctx, big); !errors.Is(err, store.ErrFenced) {
		t.Fatalf("apply after the key was created again: %v, want ErrFenced", err)
	}
	if got := taskIDs(t, s); strings.Join(got, ",") != "t-1,t-2" {
		t.Fatalf("tasks after fenced writes: %v, want t-1,t-2", got)
	}
}

// A batch beyond etcd's limits of one transaction (128 operations, 1.5 MiB)
// lands whole.
func TestLargeBatchLandsWhole(t *testing.T) {
	ctx := context.Background()
	s := open(t, cluster, "/large/")
	defer s.Close()
	var b store.Batch
	for i := range 400 {
		b.Agents = append(b.Agents, store.Agent{ID: fmt.Sprintf("a-%03d", i), Hostname: "h", State: store.AgentActive})
	}
	for i := range 300 {
		x := task(fmt.Sprintf("t-%03d", i))
		x.Message = strings.Repeat("m", 20<<10) // 6 MiB in all
		b.Tasks = append(b.Tasks, x)
	}
	if err := s.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	other := open(t, cluster, "/large/")
	defer other.Close()
	as, err := other.Agents(ctx)
	if err != nil || len(as) != 400 {
		t.Fatalf("agents: %d (%v), want 400", len(as), err)
	}
	ts, err := other.Tasks(ctx)
	if err != nil || len(ts) != 300 || ts[299].Message != b.Tasks[299].Message {
		t.Fatalf("tasks: %d (%v), want 300 with their messages", len(ts), err)
	}
	// One entry larger than a request is refused with a message saying so.
	huge := task("t-huge")
	huge.Message = strings.Repeat("m", 2<<20)
	if err := s.Apply(ctx, store.Batch{Tasks: []store.Task{huge}}); err == nil || !strings.Contains(err.Error(), "max-request-bytes") {
		t.Fatalf("a 2 MiB entry: %v", err)
	}
}

// A standby's Store follows what the leader's writes: its cache gets them
// from the watch without reading, and its reads see them at once.
func TestFollowsAnotherStore(t *testing.T) {
	ctx := context.Background()
	leader, standby := pair(t, "/follow/")
	if err := leader.Apply(ctx, store.Batch{Tasks: []store.Task{task("t-1"), task("t-2")}}); err != nil {
		t.Fatal(err)
	}
	if got := taskIDs(t, standby); strings.Join(got, ",") != "t-1,t-2" {
		t.Fatalf("standby reads %v, want t-1,t-2", got)
	}
	if err := leader.Apply(ctx, store.Batch{DeleteTasks: []string{"t-1"}, Weights: map[string]float64{"web": 3}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(standby.cache.sorted(store.KindTasks)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the standby's cache did not follow a delete within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ws, err := standby.Weights(ctx)
	if err != nil || ws["web"] != 3 {
		t.Fatalf("weights %v (%v)", ws, err)
	}
}

// A write, a delete too, is seen by another Store's read made right after
// it, not only once the watch brings it.
func TestReadSeesDeleteAtOnce(t *testing.T) {
	ctx := context.Background()
	a, b := pair(t, "/deletes/")
	for i := range 20 {
		id := fmt.Sprintf("t-%02d", i)
		if err := a.Apply(ctx, store.Batch{Tasks: []store.Task{task(id)}}); err != nil {
			t.Fatal(err)
		}
		if got := taskIDs(t, b); len(got) != 1 || got[0] != id {
			t.Fatalf("after writing %s: %v", id, got)
		}
		if err := a.Apply(ctx, store.Batch{DeleteTasks: []string{id}}); err != nil {
			t.Fatal(err)
		}
		if got := taskIDs(t, b); len(got) != 0 {
			t.Fatalf("after deleting %s: %v", id, got)
		}
	}
}

// A Store whose watch does not follow (etcd trouble) still reads what
// was written: it reads the registry again.
func TestReadsWithoutTheWatch(t *testing.T) {
	a, b := pair(t, "/nowatch/")
	b.stop()
	b.wg.Wait()
	if err := a.Apply(context.Background(), store.Batch{Tasks: []store.Task{task("t-1")}}); err != nil {
		t.Fatal(err)
	}
	if got := taskIDs(t, b); len(got) != 1 || got[0] != "t-1" {
		t.Fatalf("read %v, want t-1", got)
	}
}

// One member down changes nothing; two down: Apply fails with
// ErrUnavailable within its timeout, naming etcd; both back: it works.
func TestQuorumLoss(t *testing.T) {
	c, err := etcdtest.Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	ctx := context.Background()
	s, err := Open(ctx, Config{Endpoints: c.Endpoints()}) // requests time out after 5 s
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	write := func(id string) error { return s.Apply(ctx, store.Batch{Tasks: []store.Task{task(id)}}) }
	if err := write("t-1"); err != nil {
		t.Fatal(err)
	}
	c.Kill(0)
	if err := write("t-2"); err != nil {
		t.Fatalf("with 2 of 3 members: %v", err)
	}
	c.Kill(1)
	start := time.Now()
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	err = s.Apply(short, store.Batch{Tasks: []store.Task{task("t-3")}})
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), c.Endpoints()[2]) {
		t.Fatalf("with 1 of 3 members: %v, want ErrUnavailable naming the endpoints", err)
	}
	if d := time.Since(start); d > 10*time.Second { // it must not hang; no exact timing here
		t.Errorf("refusing took %s; the call's timeout was 2 s", d)
	}
	short, cancel = context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.Tasks(short); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("read without a quorum: %v, want ErrUnavailable", err)
	}
	for _, i := range []int{0, 1} {
		if err := c.Restart(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := c.WaitHealthy(i, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for err = write("t-4"); err != nil && time.Now().Before(deadline); err = write("t-4") {
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("after the members came back: %v", err)
	}
	if got := taskIDs(t, s); !strings.HasSuffix(strings.Join(got, ","), "t-4") || !strings.HasPrefix(strings.Join(got, ","), "t-1,t-2") {
		t.Fatalf("tasks %v", got)
	}
}

// Open fails fast, with ErrUnavailable and the endpoints, when nothing
// answers.
func TestOpenUnreachable(t *testing.T) {
	start := time.Now()
	_, err := Open(context.Background(), Config{Endpoints: []string{"http://127.0.0.1:1"}, DialTimeout: time.Second})
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("open: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second { // it must not hang; no exact timing here
		t.Errorf("open took %s with a 1 s dial timeout", d)
	}
}

// TLS settings that cannot work are refused before anything is dialled,
// naming what is wrong.
func TestTLSSettingsRefused(t *testing.T) {
	ctx := context.Background()
	eps := cluster.Endpoints()
	if _, err := Open(ctx, Config{Endpoints: eps, Cert: "c.pem"}); err == nil || !strings.Contains(err.Error(), "both a client certificate and its key") {
		t.Errorf("a certificate without its key: %v", err)
	}
	missing := t.TempDir() + "/no-ca.pem"
	if _, err := Open(ctx, Config{Endpoints: eps, CA: missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("a missing CA file: %v", err)
	}
	if _, err := Open(ctx, Config{}); err == nil || !strings.Contains(err.Error(), "--etcd-endpoints") {
		t.Errorf("no endpoints: %v", err)
	}
}

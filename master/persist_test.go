package master

import (
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/master/store"
)

// outage is the registry (a real bbolt file) while its storage refuses
// writes, as etcd without quorum does: Apply fails while down is set.
type outage struct {
	store.Store
	down atomic.Bool
}

var errOutage = errors.New("the registry cannot be written")

func (o *outage) Apply(ctx context.Context, b store.Batch) error {
	if o.down.Load() {
		return errOutage
	}
	return o.Store.Apply(ctx, b)
}

// A change that failed to be written fails its caller; a change made after
// the registry is back is written and succeeds: the failed batch's error
// is not the answer of every later change (once etcd's quorum returns, the
// first launch must not be refused with the outage's error).
func TestPersisterErrorIsThatBatchOnly(t *testing.T) {
	m, err := New(DefaultConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.OpenBolt(filepath.Join(t.TempDir(), "registry.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	st := &outage{Store: b}
	m.st = st
	m.p = newPersister(m)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.p.run(ctx) }()
	defer func() { cancel(); <-done }()

	write := func(role string) error {
		m.mu.Lock()
		m.weights[role] = 2
		g := m.p.markWeight(role)
		m.mu.Unlock()
		wctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		return m.p.wait(wctx, g)
	}
	st.down.Store(true)
	if err := write("during"); !errors.Is(err, errOutage) {
		t.Fatalf("a change while the registry is down: %v, want its error", err)
	}
	st.down.Store(false)
	if err := write("after"); err != nil {
		t.Fatalf("the first change after the registry came back: %v, want it written", err)
	}
	ws, err := b.Weights(context.Background())
	if err != nil || ws["after"] != 2 {
		t.Errorf("weights in the registry: %v %v, want the change made after the outage", ws, err)
	}
}

package master

import (
	"context"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

func decodeBatch(t *testing.T, b []byte) []uint64 {
	t.Helper()
	var resp masterv1.SubscribeResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		t.Fatalf("a batch does not decode as a SubscribeResponse: %v", err)
	}
	var seqs []uint64
	for _, e := range resp.Events {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// A batch is exactly the events after the cursor, in order, decoding as a
// SubscribeResponse; it is a view of the log (no copy per subscriber),
// bounded by maxBytes at an event's end, and it ends where an arena chunk
// does.
func TestEventLogBatches(t *testing.T) {
	l := newEventLog(1 << 14)
	for range 5 {
		l.publish(&masterv1.Event{Type: masterv1.Event_TASK_UPDATED})
	}
	a, next, _, ok := l.after(2, 1<<20)
	if got := decodeBatch(t, a); !ok || next != 5 || len(got) != 3 || got[0] != 3 || got[2] != 5 {
		t.Fatalf("after(2): %v, next %d, ok %v; want events 3..5", got, next, ok)
	}
	b, _, _, _ := l.after(2, 1<<20)
	if &a[0] != &b[0] {
		t.Error("two subscribers at the same cursor got copies")
	}
	one := l.ring[1].end - l.ring[1].off
	c, next, _, _ := l.after(0, 2*one)
	if got := decodeBatch(t, c); next != 2 || len(got) != 2 || got[1] != 2 {
		t.Errorf("bounded batch: %v, next %d; want events 1, 2", got, next)
	}
	if _, next, _, ok := l.after(5, 1<<20); !ok || next != 5 {
		t.Errorf("caught up: next %d ok %v", next, ok)
	}
	// Past a chunk: every event once, in order, across batches.
	big := &masterv1.Event{Type: masterv1.Event_TASK_UPDATED, Task: &masterv1.Task{Id: string(make([]byte, 4000))}}
	for range 600 { // > 2 MiB
		l.publish(big)
	}
	seq, chunks := uint64(0), 0
	for seq < 605 {
		b, n, _, ok := l.after(seq, 4<<20)
		if !ok {
			t.Fatal("events lost")
		}
		for i, s := range decodeBatch(t, b) {
			if s != seq+uint64(i)+1 {
				t.Fatalf("batch after %d holds %d at %d", seq, s, i)
			}
		}
		seq = n
		chunks++
	}
	if chunks < 3 {
		t.Errorf("2 MiB of events in %d batches: a batch crossed an arena chunk", chunks)
	}
	// A lapped cursor is refused.
	small := newEventLog(4)
	for range 10 {
		small.publish(&masterv1.Event{Type: masterv1.Event_TASK_UPDATED})
	}
	if _, _, _, ok := small.after(2, 1<<20); ok {
		t.Error("after a cursor the ring no longer holds: ok")
	}
}

// Parking is idempotent until the next wake-up, which wakes each parked
// subscriber once; one parked after it waits for the one after.
func TestEventLogWakesParkedOnce(t *testing.T) {
	l := newEventLog(16)
	a := &subscriber{wake: make(chan struct{}, 1)}
	b := &subscriber{wake: make(chan struct{}, 1)}
	l.park(a)
	l.park(a)
	l.park(b)
	if len(l.idle) != 2 {
		t.Fatalf("%d parked, want 2 (a parked twice counts once)", len(l.idle))
	}
	l.wakeIdle()
	for name, s := range map[string]*subscriber{"a": a, "b": b} {
		select {
		case <-s.wake:
		default:
			t.Errorf("%s was not woken", name)
		}
	}
	l.park(a)
	l.wakeIdle()
	l.wakeIdle()
	select {
	case <-b.wake:
		t.Error("b, not parked again, was woken again")
	default:
	}
	select {
	case <-a.wake:
	default:
		t.Error("a, parked again, was not woken")
	}
}

// Many subscribers, events published in bursts and pauses (so that they
// park, are woken and park again), one subscriber stalled: every reading
// subscriber gets every event once, in order.
func TestFanoutEveryEventInOrder(t *testing.T) {
	m, c, _ := startMaster(t, func(c *Config) { c.EventBuffer, c.SubscriberLag = 1<<16, 1<<15 })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sconn, err := grpc.NewClient(m.SocketAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close()
	stalled, err := masterv1.NewOperatorClient(sconn).Subscribe(ctx, &masterv1.SubscribeRequest{})
	if err != nil {
		t.Fatal(err)
	}
	stalled.Recv() // and never again
	const subs, events = 50, 3000
	type got struct {
		first uint64
		seqs  []uint64
	}
	results := make([]got, subs)
	var wg sync.WaitGroup
	for i := range subs {
		evs, errc, _ := subscribe(t, c, 0)
		first := <-evs
		results[i].first = first.Seq
		wg.Add(1)
		go func() {
			defer wg.Done()
			for len(results[i].seqs) < events {
				select {
				case e := <-evs:
					if e.Type != masterv1.Event_HEARTBEAT {
						results[i].seqs = append(results[i].seqs, e.Seq)
					}
				case err := <-errc:
					t.Errorf("subscriber %d: %v", i, err)
					return
				case <-time.After(time.Minute):
					t.Errorf("subscriber %d: %d events of %d, then none for a minute", i, len(results[i].seqs), events)
					return
				}
			}
		}()
	}
	big := &masterv1.Event{Type: masterv1.Event_TASK_UPDATED, Task: &masterv1.Task{Id: string(make([]byte, 200))}}
	for i := range events {
		m.mu.Lock()
		m.ev.publish(proto.Clone(big).(*masterv1.Event))
		m.mu.Unlock()
		if i%(1+rand.IntN(50)) == 0 {
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
		}
	}
	wg.Wait()
	for i, r := range results {
		for k, seq := range r.seqs {
			if seq != r.first+uint64(k)+1 {
				t.Fatalf("subscriber %d: event %d is seq %d, want %d (every event once, in order)", i, k, seq, r.first+uint64(k)+1)
			}
		}
	}
}

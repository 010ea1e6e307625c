package master

import (
	"testing"

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

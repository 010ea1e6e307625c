package master

import (
	"bytes"
	"testing"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	"google.golang.org/protobuf/proto"
)

// Subscribers at the same cursor send the same bytes, built once; the
// batch is exactly the events after the cursor, in order, and one that
// would pass maxBytes is cut at an event's end and not shared.
func TestEventLogSharedBatches(t *testing.T) {
	l := newEventLog(16)
	for range 5 {
		l.publish(&masterv1.Event{Type: masterv1.Event_TASK_UPDATED})
	}
	a, next, _, ok := l.after(2, nil, 1<<20)
	if !ok || next != 5 {
		t.Fatalf("after(2): next %d ok %v, want 5 true", next, ok)
	}
	var resp masterv1.SubscribeResponse
	if err := proto.Unmarshal(a, &resp); err != nil || len(resp.Events) != 3 || resp.Events[0].Seq != 3 || resp.Events[2].Seq != 5 {
		t.Fatalf("after(2) decodes to %v, %v: want events 3..5", &resp, err)
	}
	b, _, _, _ := l.after(2, nil, 1<<20)
	if &a[0] != &b[0] {
		t.Error("a second subscriber at the same cursor built the batch again")
	}
	c, _, _, _ := l.after(3, nil, 1<<20)
	if !bytes.Equal(c, a[len(a)-len(c):]) || &c[0] == &a[0] {
		t.Error("another cursor got the wrong batch")
	}
	l.publish(&masterv1.Event{Type: masterv1.Event_TASK_UPDATED})
	d, next, _, _ := l.after(2, nil, 1<<20)
	if next != 6 || &d[0] == &a[0] || !bytes.Equal(d[:len(a)], a) {
		t.Errorf("after a publish: next %d, shared %v; want 6 and a new batch extending the old", next, &d[0] == &a[0])
	}
	one := len(l.ring[1].wire)
	e, next, _, _ := l.after(0, nil, 2*one)
	if next != 2 || len(e) != 2*one {
		t.Errorf("bounded batch: next %d, %d bytes; want 2 and %d", next, len(e), 2*one)
	}
	if sb := l.shared.Load(); sb.from == 1 {
		t.Error("a batch cut short was shared")
	}
	if _, next, _, ok := l.after(6, nil, 1<<20); !ok || next != 6 {
		t.Errorf("caught up: next %d ok %v", next, ok)
	}
}

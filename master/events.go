package master

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	encproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
)

// eventLog numbers events and keeps the last ones in a ring, for
// subscribers to read from at their own pace and to resume from. Publishing
// costs the same with one subscriber or a thousand: subscribers are woken
// by closing a channel. Each event is encoded once, into an arena where
// events follow one another, so that a batch of consecutive events is one
// slice of it: a subscriber sends it as it is, with no copy and no buffer
// of its own, however many subscribers send it.
//
// Subscribers that have sent everything wait to be woken, together, once
// per batch window after a publish (wakeLoop): a thousand of them cost a
// thousand wake-ups per window, not per event, and a subscriber that is
// still sending (or stalled in a Send) is not woken at all.
type eventLog struct {
	// idleMu guards idle: the subscribers waiting for the next wake-up.
	idleMu sync.Mutex
	idle   []*subscriber
	spare  []*subscriber

	mu     sync.RWMutex
	ring   []loggedEvent
	last   uint64 // seq of the newest event; base: none yet
	notify chan struct{}
	// arena is the chunk events are encoded into, used bytes of it so far.
	// Bytes below used are never written again (gRPC may be sending
	// them); a full chunk is left to the events that point into it.
	arena []byte
	used  int
	// base is where this log's numbers start: a leader's term<<32 (ha.go),
	// so that numbers continue across leaders; 0 for a single master.
	base uint64
}

// arenaChunk is the size of an arena chunk, and so of the largest batch
// that is one slice.
const arenaChunk = 1 << 20

type loggedEvent struct {
	seq uint64
	// arena[off:end] is the event encoded as field 1 of SubscribeResponse
	// (tag, length, bytes), so that a batch is the concatenation of its
	// events.
	arena    []byte
	off, end int
}

func newEventLog(size int) *eventLog { return newEventLogAt(size, 0) }

// newEventLogAt numbers events from base+1.
func newEventLogAt(size int, base uint64) *eventLog {
	return &eventLog{ring: make([]loggedEvent, size), notify: make(chan struct{}), last: base, base: base}
}

// publish numbers ev and appends it. Callers hold Master.mu, so that
// events are numbered in the order the state changed.
func (l *eventLog) publish(ev *masterv1.Event) uint64 {
	ev.Time = timestamppb.Now()
	l.mu.Lock()
	l.last++
	ev.Seq = l.last
	size := proto.Size(ev)
	need := protowire.SizeTag(1) + protowire.SizeBytes(size)
	if len(l.arena)-l.used < need {
		l.arena, l.used = make([]byte, max(arenaChunk, need)), 0
	}
	w := protowire.AppendTag(l.arena[l.used:l.used], 1, protowire.BytesType)
	w = protowire.AppendVarint(w, uint64(size))
	w, _ = proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(w, ev)
	e := loggedEvent{seq: l.last, arena: l.arena, off: l.used, end: l.used + len(w)}
	if len(w) > need { // Size and Marshal disagree: w is a buffer of its own
		e = loggedEvent{seq: l.last, arena: w, off: 0, end: len(w)}
	} else {
		l.used += len(w)
	}
	l.ring[l.last%uint64(len(l.ring))] = e
	ch := l.notify
	l.notify = make(chan struct{})
	seq := l.last
	l.mu.Unlock()
	close(ch)
	return seq
}

// park puts s among the subscribers the next wake-up wakes (once, however
// often it is parked before that).
func (l *eventLog) park(s *subscriber) {
	if !s.parked.CompareAndSwap(false, true) {
		return
	}
	l.idleMu.Lock()
	l.idle = append(l.idle, s)
	l.idleMu.Unlock()
}

// wakeIdle wakes the parked subscribers; none of them can make it wait.
func (l *eventLog) wakeIdle() {
	l.idleMu.Lock()
	idle := l.idle
	l.idle, l.spare = l.spare[:0], nil
	l.idleMu.Unlock()
	for i, s := range idle {
		s.parked.Store(false)
		s.signal()
		idle[i] = nil
	}
	l.idleMu.Lock()
	l.spare = idle[:0]
	l.idleMu.Unlock()
}

// changed is a channel closed at the next publish.
func (l *eventLog) changed() <-chan struct{} {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.notify
}

// wakeLoop wakes parked subscribers once per batch window in which events
// were published: the window lets a batch gather (with a thousand
// subscribers, one send per event each is what costs, not the bytes).
func (l *eventLog) wakeLoop(ctx context.Context, window time.Duration) {
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	defer gather.Stop()
	for {
		select {
		case <-l.changed():
		case <-ctx.Done():
			return
		}
		if window > 0 {
			gather.Reset(window)
			select {
			case <-gather.C:
			case <-ctx.Done():
				return
			}
		}
		l.wakeIdle()
	}
}

func (l *eventLog) lastSeq() uint64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.last
}

// oldest is the seq of the oldest event still kept (last+1 when none).
func (l *eventLog) oldestLocked() uint64 {
	n := uint64(len(l.ring))
	if l.last-l.base < n {
		return l.base + 1
	}
	return l.last - n + 1
}

// after returns the wire form of events after seq, up to maxBytes (at
// least one event), as one slice of the arena: read-only, shared with
// whoever else sends it. It returns the seq of the last event in it, a
// channel closed when more arrive, and ok=false when events after seq are
// no longer kept. A batch ends where an arena chunk does.
func (l *eventLog) after(seq uint64, maxBytes int) ([]byte, uint64, <-chan struct{}, bool) {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if seq+1 < l.oldestLocked() {
		return nil, seq, nil, false
	}
	if seq >= l.last {
		return nil, seq, l.notify, true
	}
	n := uint64(len(l.ring))
	first := l.ring[(seq+1)%n]
	end := first.end
	seq++
	for s := seq + 1; s <= l.last; s++ {
		e := l.ring[s%n]
		if &e.arena[0] != &first.arena[0] || e.off != end || e.end-first.off > maxBytes {
			break
		}
		end, seq = e.end, s
	}
	return first.arena[first.off:end:end], seq, l.notify, true
}

// rawBatch is a SubscribeResponse already encoded; eventCodec sends it
// as is.
type rawBatch []byte

// eventCodec is gRPC's proto codec, except that a rawBatch is sent as the
// bytes it is.
type eventCodec struct{}

var protoCodec = encoding.GetCodecV2(encproto.Name)

func (eventCodec) Name() string { return encproto.Name }

func (eventCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(rawBatch); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return protoCodec.Marshal(v)
}

func (eventCodec) Unmarshal(data mem.BufferSlice, v any) error { return protoCodec.Unmarshal(data, v) }

// subscriber is one Subscribe call.
type subscriber struct {
	sent atomic.Uint64 // seq of the last event sent
	// wake is signalled by the event log's wake-ups while parked.
	wake   chan struct{}
	parked atomic.Bool
	cut    chan struct{}
	once   sync.Once
	reason atomic.Value // string
}

func (s *subscriber) cutOff(why string) {
	s.once.Do(func() { s.reason.Store(why); close(s.cut); s.signal() })
}

// signal wakes the subscriber's sender if it waits (or makes its next wait
// end at once).
func (s *subscriber) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// subscribe serves one subscriber until it goes, falls behind or the
// master stops.
func (m *Master) subscribe(req *masterv1.SubscribeRequest, stream grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
	ctx := stream.Context()
	var first *masterv1.Event
	m.mu.Lock()
	m.ev.mu.RLock()
	last, oldest, base := m.ev.last, m.ev.oldestLocked(), m.ev.base
	m.ev.mu.RUnlock()
	cursor := req.GetSince()
	switch {
	case cursor == 0:
		first = &masterv1.Event{Type: masterv1.Event_SUBSCRIBED, Seq: last, Time: timestamppb.Now(),
			Subscribed: &masterv1.Subscribed{State: m.stateLocked(), HeartbeatInterval: durationpb.New(m.cfg.SubscriberHeartbeat)}}
		cursor = last
	case cursor < base:
		m.mu.Unlock()
		return status.Errorf(codes.OutOfRange, "event %d is of an earlier leader's term: the leading master changed and this one numbers its events from %d; "+
			"subscribe again without --since to take a new snapshot", cursor, base+1)
	case cursor > last:
		m.mu.Unlock()
		return status.Errorf(codes.InvalidArgument, "there is no event %d yet (the last is %d): resume from a sequence number you received", cursor, last)
	case cursor+1 < oldest:
		m.mu.Unlock()
		return status.Errorf(codes.OutOfRange, "events after %d are no longer kept (the oldest kept is %d, the buffer holds %d): subscribe again without --since to take a new snapshot", cursor, oldest, m.cfg.EventBuffer)
	}
	m.mu.Unlock()

	sub := &subscriber{cut: make(chan struct{}), wake: make(chan struct{}, 1)}
	sub.sent.Store(cursor)
	m.subscribers.Store(sub, struct{}{})
	defer m.subscribers.Delete(sub)

	// The sender runs apart so that a Send blocked by a client that stopped
	// reading does not keep this call from ending.
	senderDone := make(chan error, 1)
	m.streamLoops.Go(func() { senderDone <- m.sendEvents(ctx, stream, sub, first, cursor) })
	select {
	case err := <-senderDone:
		return err
	case <-sub.cut:
		why, _ := sub.reason.Load().(string)
		m.cutCounter.Inc()
		m.log.Info("subscriber cut off", "why", why, "resume_after", sub.sent.Load())
		return status.Errorf(codes.ResourceExhausted, "%s: subscribe again with since=%d (gearbox events --since %d) to resume without a gap",
			why, sub.sent.Load(), sub.sent.Load())
	case <-ctx.Done():
		return ctx.Err()
	}
}

const maxBatchBytes = 1 << 20

func (m *Master) sendEvents(ctx context.Context, stream grpc.ServerStreamingServer[masterv1.SubscribeResponse], sub *subscriber, first *masterv1.Event, cursor uint64) error {
	if first != nil {
		if err := stream.Send(&masterv1.SubscribeResponse{Events: []*masterv1.Event{first}}); err != nil {
			return err
		}
	}
	// Whatever may end a wait signals sub.wake: the wake-up after a
	// publish, the heartbeat's timer, the cut-off, the call's end. A
	// thousand subscribers park and wake every batch window: one channel
	// to wait on costs a fraction of a select over four.
	every := m.cfg.SubscriberHeartbeat
	var hbDue atomic.Bool
	hb := time.AfterFunc(every, func() { hbDue.Store(true); sub.signal() })
	defer hb.Stop()
	defer context.AfterFunc(ctx, sub.signal)()
	lastSent := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		select {
		case <-sub.cut:
			return nil
		default:
		}
		// A slice of the event log's arena, never written again: gRPC
		// writes it after SendMsg returns.
		buf, next, _, ok := m.ev.after(cursor, maxBatchBytes)
		if !ok {
			sub.cutOff(fmt.Sprintf("fell more than %d events behind", m.cfg.EventBuffer))
			return nil
		}
		if next > cursor {
			if err := stream.SendMsg(rawBatch(buf)); err != nil {
				return err
			}
			cursor, lastSent = next, time.Now()
			sub.sent.Store(cursor)
			continue
		}
		// A heartbeat once nothing was sent for its interval (the timer
		// is set again, not at every send).
		if hbDue.CompareAndSwap(true, false) {
			if idle := time.Since(lastSent); idle < every {
				hb.Reset(every - idle)
				continue
			}
			if err := stream.Send(&masterv1.SubscribeResponse{Events: []*masterv1.Event{{Type: masterv1.Event_HEARTBEAT, Seq: cursor, Time: timestamppb.Now()}}}); err != nil {
				return err
			}
			lastSent = time.Now()
			hb.Reset(every)
			continue
		}
		// Caught up: wait for the wake-up after the next publish. Parked
		// first, then checked, so that an event published in between is
		// not missed.
		m.ev.park(sub)
		if m.ev.lastSeq() > cursor {
			continue
		}
		<-sub.wake
	}
}

// lagLoop cuts off subscribers that fell SubscriberLag events behind,
// including those whose Send is blocked because they stopped reading.
func (m *Master) lagLoop(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		last := m.ev.lastSeq()
		m.subscribers.Range(func(k, _ any) bool {
			s := k.(*subscriber)
			if lag := last - s.sent.Load(); lag > uint64(m.cfg.SubscriberLag) {
				s.cutOff(fmt.Sprintf("too slow: %d events behind (the limit is --subscriber-lag %d)", lag, m.cfg.SubscriberLag))
			}
			return true
		})
	}
}

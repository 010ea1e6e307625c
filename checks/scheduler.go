package checks

import (
	"container/heap"
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// A container's checks, as the scheduler drives them:
//
//	Add ──► waiting (in the heap until due: start+delay, then every interval)
//	           │ due: a worker slot is free
//	           ▼
//	        running (one probe at a time, bounded by the timeout)
//	           │ result: Status updated; OnChange if the state changed
//	           ├──► waiting again
//	           └──► failed (consecutive_failures reached): OnFailed, no more checks
//	Remove (container ended or removed) or Run's end: the probe is cancelled.

// Config is what a Scheduler works with.
type Config struct {
	Env Env
	// Workers bounds the probes running at once (default 16).
	Workers int
	// OnChange is called when a container's health state changes.
	OnChange func(id string, s Status)
	// OnFailed is called once when a container's check failed
	// consecutive_failures times in a row; its checks stop.
	OnFailed func(id string, c Check, s Status)
	Log      *slog.Logger
}

// Scheduler runs every container's checks from one timer heap.
type Scheduler struct {
	cfg     Config
	mu      sync.Mutex
	entries map[string]*entry
	queue   queue
	wake    chan struct{}
	sem     chan struct{}
	m       *metrics
}

type entry struct {
	id        string
	check     Check
	started   time.Time
	due       time.Time
	index     int // in the heap; -1 when not
	removed   bool
	succeeded bool
	status    Status
	proc      process
	cancel    context.CancelFunc // of the probe running, if one is
}

// New builds a scheduler; Run runs it.
func New(cfg Config) *Scheduler {
	if cfg.Workers <= 0 {
		cfg.Workers = 16
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.OnChange == nil {
		cfg.OnChange = func(string, Status) {}
	}
	if cfg.OnFailed == nil {
		cfg.OnFailed = func(string, Check, Status) {}
	}
	return &Scheduler{cfg: cfg, entries: map[string]*entry{}, wake: make(chan struct{}, 1),
		sem: make(chan struct{}, cfg.Workers), m: newMetrics()}
}

// Collectors are the scheduler's Prometheus metrics.
func (s *Scheduler) Collectors() []prometheus.Collector { return s.m.collectors() }

// Add starts checking container id, which started at startedAt (its delay
// and grace period count from then). It replaces a check the container had.
func (s *Scheduler) Add(id string, c Check, startedAt time.Time) {
	s.mu.Lock()
	s.removeLocked(id)
	e := &entry{id: id, check: c, started: startedAt, due: startedAt.Add(c.Delay), index: -1,
		status: Status{State: Starting}}
	s.entries[id] = e
	heap.Push(&s.queue, e)
	s.mu.Unlock()
	s.poke()
}

// Remove stops checking container id; a probe running is cancelled.
func (s *Scheduler) Remove(id string) {
	s.mu.Lock()
	s.removeLocked(id)
	s.mu.Unlock()
	s.poke()
}

func (s *Scheduler) removeLocked(id string) {
	e, ok := s.entries[id]
	if !ok {
		return
	}
	delete(s.entries, id)
	e.removed = true
	if e.index >= 0 {
		heap.Remove(&s.queue, e.index)
	}
	if e.cancel != nil {
		e.cancel()
	}
}

// Status is container id's health; ok is false when it has no check.
func (s *Scheduler) Status(id string) (Status, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return Status{}, false
	}
	return e.status, true
}

func (s *Scheduler) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run runs checks as they fall due until ctx ends; then it cancels the
// probes running and returns once they have.
func (s *Scheduler) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		batch, wait := s.next(time.Now())
		if len(batch) == 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-s.wake:
			case <-timer.C:
			}
			timer.Stop()
			continue
		}
		for _, e := range batch {
			if !s.dispatch(ctx, e, &wg) {
				return
			}
		}
	}
}

// dispatch runs e's probe in a worker once one is free; false when ctx
// ended first.
func (s *Scheduler) dispatch(ctx context.Context, e *entry, wg *sync.WaitGroup) bool {
	select {
	case s.sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	pctx, cancel := context.WithTimeout(ctx, e.check.Timeout)
	s.mu.Lock()
	if e.removed {
		s.mu.Unlock()
		cancel()
		<-s.sem
		return true
	}
	e.cancel = cancel
	s.mu.Unlock()
	s.m.lateness.Observe(max(time.Since(e.due), 0).Seconds())
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() { <-s.sem }()
		defer cancel()
		s.runOne(pctx, e)
	}()
	return true
}

// coalesce is how early a check may run to share a wake-up with one that
// is due (at most a quarter of its interval). Waking the agent costs more
// than a check on a busy or virtual machine: a hundred checks a second
// spread out cost four times the CPU of the same checks run in batches.
const coalesce = 100 * time.Millisecond

// next pops the entries due at now, with those due soon enough to run
// with them, or says how long until one is due.
func (s *Scheduler) next(now time.Time) ([]*entry, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return nil, time.Hour
	}
	if d := s.queue[0].due.Sub(now); d > 0 {
		return nil, d
	}
	var batch, notYet []*entry
	for len(s.queue) > 0 && s.queue[0].due.Sub(now) <= coalesce {
		e := heap.Pop(&s.queue).(*entry)
		if early := e.due.Sub(now); early > 0 && early > e.check.Interval/4 {
			notYet = append(notYet, e)
			continue
		}
		batch = append(batch, e)
	}
	for _, e := range notYet {
		heap.Push(&s.queue, e)
	}
	return batch, 0
}

// runOne probes e once and records the result.
func (s *Scheduler) runOne(ctx context.Context, e *entry) {
	ok, out := probe(ctx, s.cfg.Env, e.id, e.check, &e.proc)
	now := time.Now()
	s.mu.Lock()
	e.cancel = nil
	if e.removed {
		s.mu.Unlock()
		return
	}
	s.m.observe(e.check.Kind, ok)
	changed, failed := e.record(ok, out, now)
	st := e.status
	if failed {
		delete(s.entries, e.id)
		e.removed = true
	} else {
		e.due = e.due.Add(e.check.Interval)
		if e.due.Before(now) {
			e.due = now
		}
		heap.Push(&s.queue, e)
	}
	s.mu.Unlock()
	s.poke()
	if changed {
		s.cfg.Log.Info("container health changed", "container_id", e.id, "health", st.State, "output", st.Output)
		s.cfg.OnChange(e.id, st)
	}
	if failed {
		s.cfg.Log.Warn("container failed its health check", "container_id", e.id, "check", e.check.String(), "failures", st.Failures, "output", st.Output)
		s.cfg.OnFailed(e.id, e.check, st)
	}
}

// record takes one result into the status, as Mesos does: a failure
// within the grace period, before any success, is not counted; a success
// ends the grace period and resets the count. It says whether the state
// changed and whether the failures reached consecutive_failures.
func (e *entry) record(ok bool, out string, at time.Time) (changed, failed bool) {
	prev := e.status.State
	e.status.Output, e.status.CheckedAt = out, at
	switch {
	case ok:
		e.succeeded = true
		e.status.Failures = 0
		e.status.State = Healthy
	case !e.succeeded && at.Sub(e.started) < e.check.GracePeriod:
		// In the grace period: the state stays starting.
	default:
		e.status.Failures++
		e.status.State = Unhealthy
		failed = e.status.Failures >= e.check.ConsecutiveFailures
	}
	return e.status.State != prev, failed
}

// queue is a min-heap of entries by due time.
type queue []*entry

func (q queue) Len() int           { return len(q) }
func (q queue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q queue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *queue) Push(x any) {
	e := x.(*entry)
	e.index = len(*q)
	*q = append(*q, e)
}
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	e.index = -1
	return e
}

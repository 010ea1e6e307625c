package master

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gearboxd/gearbox/master/store"
)

// persister writes the registry's changes in group commits: changes are
// marked dirty under Master.mu; one goroutine takes every dirty entry's
// latest value and writes them in one transaction, then wakes whoever waits
// for a change of that batch. The latest value always wins, so the store
// never goes back in time even though writes leave the lock.
type persister struct {
	m      *Master
	mu     sync.Mutex
	cond   *sync.Cond
	agents map[string]struct{}
	tasks  map[string]struct{}
	fws    map[string]struct{}
	// weights: roles whose weight changed.
	weights map[string]struct{}
	// gen counts marks; done is the gen the last written batch covered.
	gen, done uint64
	// err is the error of the last batch that failed, errGen the gen it
	// covered: only the changes of that batch (gen <= errGen) failed; a
	// change marked after it waits for a later batch.
	err     error
	errGen  uint64
	wake    chan struct{}
	stopped bool
}

func newPersister(m *Master) *persister {
	p := &persister{m: m, agents: map[string]struct{}{}, tasks: map[string]struct{}{}, fws: map[string]struct{}{},
		weights: map[string]struct{}{}, wake: make(chan struct{}, 1)}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// markAgent and markTask are called under Master.mu; they return the
// generation to wait for.
func (p *persister) markAgent(id string) uint64 { return p.mark(p.agents, id) }
func (p *persister) markTask(id string) uint64  { return p.mark(p.tasks, id) }

// markFramework and markWeight likewise, for frameworks and roles' weights.
func (p *persister) markFramework(id string) uint64 { return p.mark(p.fws, id) }
func (p *persister) markWeight(role string) uint64  { return p.mark(p.weights, role) }

func (p *persister) mark(set map[string]struct{}, id string) uint64 {
	p.mu.Lock()
	set[id] = struct{}{}
	p.gen++
	g := p.gen
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return g
}

// wait blocks until generation g is durable; it returns the store's error
// if the write failed.
func (p *persister) wait(ctx context.Context, g uint64) error {
	stop := context.AfterFunc(ctx, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	failed := func() bool { return p.err != nil && p.errGen >= g }
	for p.done < g && !failed() && !p.stopped && ctx.Err() == nil {
		p.cond.Wait()
	}
	switch {
	case p.done >= g:
		return nil
	case failed():
		return p.err
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return context.Canceled
}

func (p *persister) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			p.flush() // what was marked before the stop
			p.mu.Lock()
			p.stopped = true
			p.cond.Broadcast()
			p.mu.Unlock()
			return
		case <-p.wake:
		}
		p.flush()
	}
}

func (p *persister) flush() {
	m := p.m
	m.mu.Lock()
	p.mu.Lock()
	agents, tasks, fws, weights, gen := p.agents, p.tasks, p.fws, p.weights, p.gen
	p.agents, p.tasks, p.fws, p.weights = map[string]struct{}{}, map[string]struct{}{}, map[string]struct{}{}, map[string]struct{}{}
	p.mu.Unlock()
	if len(agents) == 0 && len(tasks) == 0 && len(fws) == 0 && len(weights) == 0 {
		m.mu.Unlock()
		p.finish(gen, nil)
		return
	}
	var b store.Batch
	for id := range agents {
		if a, ok := m.agents[id]; ok {
			b.Agents = append(b.Agents, a.Agent)
		} else {
			b.DeleteAgents = append(b.DeleteAgents, id)
		}
	}
	for id := range tasks {
		if t, ok := m.tasks[id]; ok {
			b.Tasks = append(b.Tasks, *t)
		} else {
			b.DeleteTasks = append(b.DeleteTasks, id)
		}
	}
	for id := range fws {
		if f, ok := m.frameworks[id]; ok {
			f.Framework.Roles = slices.Clone(f.Roles)
			f.SuppressedRoles = slices.Clone(f.SuppressedRoles)
			b.Frameworks = append(b.Frameworks, f.Framework)
		} else {
			b.DeleteFrameworks = append(b.DeleteFrameworks, id)
		}
	}
	if len(weights) > 0 {
		b.Weights = map[string]float64{}
		for role := range weights {
			b.Weights[role] = m.weights[role] // 0 when unset
		}
	}
	m.mu.Unlock()
	var err error
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		err = m.st.Apply(ctx, b)
		m.writeSeconds.Observe(time.Since(start).Seconds())
		cancel()
		if err == nil || attempt == 2 {
			break
		}
		m.log.Warn("writing the registry; retrying", "err", err)
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		m.log.Error("writing the registry failed: changes stay in memory and are not acknowledged", "err", err)
		// Mark them again so that a later batch retries them.
		p.mu.Lock()
		for id := range agents {
			p.agents[id] = struct{}{}
		}
		for id := range tasks {
			p.tasks[id] = struct{}{}
		}
		for id := range fws {
			p.fws[id] = struct{}{}
		}
		for r := range weights {
			p.weights[r] = struct{}{}
		}
		p.mu.Unlock()
	}
	p.finish(gen, err)
}

func (p *persister) finish(gen uint64, err error) {
	p.mu.Lock()
	if err == nil {
		p.done, p.err = gen, nil
	} else {
		p.err, p.errGen = err, gen
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

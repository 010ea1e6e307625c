package agent

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/containerizer"
)

// Mesos's rule: a sandbox is kept gc_delay × max(0, 1 − headroom − usage).
func TestSandboxDelayShrinksAsTheDiskFills(t *testing.T) {
	cfg := DefaultConfig()
	cfg.GCDelay = 100 * time.Hour
	g := newCollector(newFake(), cfg, slog.New(slog.DiscardHandler))
	for _, tc := range []struct {
		usage float64
		want  time.Duration
	}{
		{0, 90 * time.Hour},
		{0.5, 40 * time.Hour},
		{0.85, 5 * time.Hour},
		{0.9, 0},
		{1, 0},
	} {
		g.usage.Store(math.Float64bits(tc.usage))
		if got := g.sandboxDelay(); got.Round(time.Second) != tc.want {
			t.Errorf("usage %v: delay %v, want %v", tc.usage, got, tc.want)
		}
	}
	end := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	g.usage.Store(math.Float64bits(0.5))
	if due := g.dueAt(containerizer.Container{State: containerizer.TaskRunning, FinishedAt: end}); !due.IsZero() {
		t.Errorf("a running container is due at %v", due)
	}
	if due := g.dueAt(containerizer.Container{State: containerizer.TaskFinished, FinishedAt: end}); !due.Equal(end.Add(40 * time.Hour)) {
		t.Errorf("due at %v, want finished_at + 40h", due)
	}
	if due := g.dueAt(containerizer.Container{State: containerizer.TaskFailed, CreatedAt: end}); !due.Equal(end.Add(40 * time.Hour)) {
		t.Errorf("a container that never started: due at %v, want created_at + 40h", due)
	}
}

// The sweep removes ended containers whose time has come, and only those.
func TestSweepSandboxes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.WorkDir = t.TempDir()
	cfg.GCDelay = time.Hour
	cfg.GCDiskHeadroom = 0
	fake := newFake()
	now := time.Now()
	fake.put(containerizer.Container{ID: "old", State: containerizer.TaskFinished, FinishedAt: now.Add(-2 * time.Hour)})
	fake.put(containerizer.Container{ID: "new", State: containerizer.TaskFinished, FinishedAt: now})
	fake.put(containerizer.Container{ID: "running", State: containerizer.TaskRunning, StartedAt: now.Add(-48 * time.Hour)})
	g := newCollector(fake, cfg, slog.New(slog.DiscardHandler))
	g.sweepSandboxes(context.Background())
	for id, want := range map[containerizer.ContainerID]bool{"old": false, "new": true, "running": true} {
		if _, err := fake.Get(context.Background(), id); (err == nil) != want {
			t.Errorf("%s kept: %v, want %v", id, err == nil, want)
		}
	}
}

func TestGCConfigValidated(t *testing.T) {
	for _, mut := range []func(*Config){
		func(c *Config) { c.GCDelay = 0 },
		func(c *Config) { c.GCDiskHeadroom = 1.5 },
		func(c *Config) { c.ImageGC.LowThreshold = 90 },
		func(c *Config) { c.ImageGC.HighThreshold = 0 },
		func(c *Config) { c.DiskWatchInterval = 0 },
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("config %+v validated", c)
		}
	}
}

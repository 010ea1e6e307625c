package agent

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/gearboxd/gearbox/containerizer"
)

// collector is the agent's garbage collector of sandboxes and images.
//
// Sandboxes (Mesos's gc_delay and gc_disk_headroom): an ended container
// is removed, sandbox and record, as rm does, once it has been ended for
// gc_delay × max(0, 1 − gc_disk_headroom − usage of the work dir's disk).
// The schedule is computed from the container's finished_at, which the
// containerizer keeps in containerd, so it survives agent restarts.
//
// Images (kubelet's thresholds): when the filesystem of containerd's
// content store is used beyond image_gc.high_threshold percent, images no
// container uses are removed, least recently used first, until it is at
// most image_gc.low_threshold percent; images used within image_gc.min_age
// stay.
type collector struct {
	cz  containerizer.Containerizer
	cfg Config
	log *slog.Logger
	// usage is the work dir disk's used fraction at the last look, as
	// math.Float64bits.
	usage   atomic.Uint64
	imageFS string // found at the first image GC pass
}

func newCollector(cz containerizer.Containerizer, cfg Config, log *slog.Logger) *collector {
	return &collector{cz: cz, cfg: cfg, log: log}
}

// diskUsage is the used fraction of the filesystem holding path, as
// kubelet's image GC counts it: 1 − available/capacity (blocks reserved
// for root count as used).
func diskUsage(path string) (float64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	if st.Blocks == 0 {
		return 0, nil
	}
	return float64(st.Blocks-st.Bavail) / float64(st.Blocks), nil
}

// syncedUsage is diskUsage after the filesystem's pending frees are
// committed (ext4 returns freed blocks at its journal's commit): what the
// image GC reads after each removal.
func syncedUsage(path string) (float64, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", path, err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return 0, fmt.Errorf("syncfs %s: %w", path, err)
	}
	return diskUsage(path)
}

// sandboxDelay is how long an ended container's sandbox is kept now.
func (g *collector) sandboxDelay() time.Duration {
	usage := math.Float64frombits(g.usage.Load())
	f := max(0, 1-g.cfg.GCDiskHeadroom-usage)
	return time.Duration(float64(g.cfg.GCDelay) * f)
}

// dueAt is when the container's sandbox is to be removed; zero while it
// runs.
func (g *collector) dueAt(c containerizer.Container) time.Time {
	if !c.State.Terminal() {
		return time.Time{}
	}
	end := c.FinishedAt
	if end.IsZero() {
		end = c.CreatedAt // ended before its process started
	}
	return end.Add(g.sandboxDelay())
}

// interval is how often run looks: disk_watch_interval, and often enough
// that a short gc_delay is kept to within a quarter of it.
func (g *collector) interval() time.Duration {
	return max(100*time.Millisecond, min(g.cfg.DiskWatchInterval, g.cfg.GCDelay/4))
}

// run collects until ctx ends.
func (g *collector) run(ctx context.Context) {
	t := time.NewTicker(g.interval())
	defer t.Stop()
	nextImages := time.Now()
	for {
		g.sweepSandboxes(ctx)
		if now := time.Now(); !now.Before(nextImages) {
			g.collectImages(ctx)
			nextImages = now.Add(g.cfg.DiskWatchInterval)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// sweepSandboxes removes the ended containers whose time has come.
func (g *collector) sweepSandboxes(ctx context.Context) {
	if u, err := diskUsage(filepath.Join(g.cfg.WorkDir, "sandboxes")); err == nil {
		g.usage.Store(math.Float64bits(u))
	} else {
		g.log.Warn("sandbox GC: reading disk usage", "err", err)
	}
	cs, err := g.cz.Containers(ctx)
	if err != nil {
		g.log.Warn("sandbox GC: listing containers", "err", err)
		return
	}
	now := time.Now()
	for _, c := range cs {
		due := g.dueAt(c)
		if due.IsZero() || now.Before(due) {
			continue
		}
		err := g.cz.Destroy(ctx, c.ID, false)
		switch {
		case err == nil:
			g.log.Info("sandbox GC: removed ended container and its sandbox", "container_id", c.ID, "finished_at", c.FinishedAt)
		case errdefs.IsNotFound(err) || ctx.Err() != nil:
		default:
			g.log.Warn("sandbox GC: removing container", "container_id", c.ID, "err", err)
		}
	}
}

// collectImages frees the image filesystem down to the low threshold once
// it is past the high one.
func (g *collector) collectImages(ctx context.Context) {
	ig := g.cfg.ImageGC
	if ig.HighThreshold >= 100 {
		return
	}
	if g.imageFS == "" {
		p, err := g.cz.ImageFS(ctx)
		if err != nil {
			g.log.Warn("image GC: finding the image filesystem", "err", err)
			return
		}
		g.imageFS = p
	}
	u, err := diskUsage(g.imageFS)
	if err != nil {
		g.log.Warn("image GC: reading disk usage", "err", err)
		return
	}
	if u*100 <= ig.HighThreshold {
		return
	}
	g.log.Info("image GC: image filesystem past its high threshold", "path", g.imageFS, "usage_percent", u*100, "high_threshold", ig.HighThreshold)
	res, err := g.cz.Prune(ctx, containerizer.PruneRequest{UnusedFor: ig.MinAge, Enough: func() bool {
		u, err := syncedUsage(g.imageFS)
		return err != nil || u*100 <= ig.LowThreshold
	}})
	after, _ := syncedUsage(g.imageFS)
	g.log.Info("image GC: done", "images", len(res.Removed), "bytes", res.ReclaimedBytes, "usage_percent", after*100, "err", err)
	if err == nil && after*100 > ig.LowThreshold {
		g.log.Warn("image GC: still past the low threshold: what is left is in use or recently used", "usage_percent", after*100, "low_threshold", ig.LowThreshold)
	}
}

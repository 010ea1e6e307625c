package allocator

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// RunHistogram is gearbox_master_allocation_run_seconds (Mesos's
// allocator/allocation_run_ms): the master registers it and passes
// ObserveRun to the allocator's config.
type RunHistogram struct{ prometheus.Histogram }

// NewRunHistogram returns the unregistered histogram.
func NewRunHistogram() RunHistogram {
	return RunHistogram{prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gearbox_master_allocation_run_seconds",
		Help:    "How long one allocation run took (all agents, roles and frameworks).",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})}
}

// ObserveRun records one run; it fits hierarchical.Config.ObserveRun.
func (h RunHistogram) ObserveRun(d time.Duration) { h.Observe(d.Seconds()) }

package containerd

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/gearboxd/gearbox/containerizer"
)

// metrics are the containerizer's Prometheus metrics, one set per
// Containerizer (no globals): the agent registers Collectors().
type metrics struct {
	loggerFailures prometheus.Counter
	launches       *prometheus.CounterVec
	launchSeconds  prometheus.Histogram
	launchPulls    *prometheus.CounterVec
	// imagesPruned and imageBytesPruned count what image pruning (the
	// image GC and PruneImages) removed.
	imagesPruned     prometheus.Counter
	imageBytesPruned prometheus.Counter
	restarts         *prometheus.CounterVec
}

func (m *metrics) pullsStarted() { m.launchPulls.WithLabelValues("pulled").Inc() }
func (m *metrics) pullJoined()   { m.launchPulls.WithLabelValues("shared").Inc() }

func newMetrics() *metrics {
	return &metrics{
		loggerFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gearbox_logger_failures_total",
			Help: "Containers whose logger was found dead or unable to write.",
		}),
		launches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearbox_containerizer_launches_total",
			Help: "Container launches by result: ok, failed (created but did not start), refused (bad request, missing image, …).",
		}, []string{"result"}),
		launchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gearbox_containerizer_launch_duration_seconds",
			Help:    "Time from a launch request to the container's process running.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 12),
		}),
		launchPulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearbox_containerizer_launch_pulls_total",
			Help: "Images launches pulled: pulled (a pull started), shared (a launch joined a pull of the same image under way).",
		}, []string{"kind"}),
		imagesPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gearbox_containerizer_images_pruned_total",
			Help: "Images removed by the image GC and PruneImages.",
		}),
		imageBytesPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gearbox_containerizer_image_bytes_pruned_total",
			Help: "Bytes of image content freed by the image GC and PruneImages.",
		}),
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearbox_containerizer_restarts_total",
			Help: "Restarts by a restart policy, by result: scheduled (a back-off began), ok (the process runs again), failed (it could not start).",
		}, []string{"result"}),
	}
}

// stateCollector reports the containers by state at each scrape.
type stateCollector struct {
	z    *Containerizer
	desc *prometheus.Desc
}

func (s stateCollector) Describe(ch chan<- *prometheus.Desc) { ch <- s.desc }

func (s stateCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[containerizer.TaskState]int{}
	s.z.mu.Lock()
	for _, c := range s.z.containers {
		counts[c.snapshot().State]++
	}
	s.z.mu.Unlock()
	for state, n := range counts {
		ch <- prometheus.MustNewConstMetric(s.desc, prometheus.GaugeValue, float64(n), state.String())
	}
}

// Collectors are the metrics to register.
func (z *Containerizer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{
		z.metrics.loggerFailures, z.metrics.launches, z.metrics.launchSeconds, z.metrics.launchPulls,
		z.metrics.imagesPruned, z.metrics.imageBytesPruned, z.metrics.restarts,
		stateCollector{z: z, desc: prometheus.NewDesc("gearbox_containerizer_containers", "Containers by task state.", []string{"state"}, nil)},
	}
}

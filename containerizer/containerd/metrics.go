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
	restarts       *prometheus.CounterVec
}

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
		z.metrics.loggerFailures, z.metrics.launches, z.metrics.launchSeconds, z.metrics.restarts,
		stateCollector{z: z, desc: prometheus.NewDesc("gearbox_containerizer_containers", "Containers by task state.", []string{"state"}, nil)},
	}
}

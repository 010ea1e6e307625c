package checks

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	runs     *prometheus.CounterVec
	failures *prometheus.CounterVec
	lateness prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gearbox_checks_runs_total",
			Help: "Health checks run, by kind."}, []string{"kind"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gearbox_checks_failures_total",
			Help: "Health checks that failed, by kind."}, []string{"kind"}),
		lateness: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "gearbox_checks_lateness_seconds",
			Help:    "How long after its due time a health check started.",
			Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
}

func (m *metrics) observe(k Kind, ok bool) {
	m.runs.WithLabelValues(k.String()).Inc()
	if !ok {
		m.failures.WithLabelValues(k.String()).Inc()
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.runs, m.failures, m.lateness}
}

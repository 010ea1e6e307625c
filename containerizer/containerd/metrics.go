package containerd

import "github.com/prometheus/client_golang/prometheus"

// metrics are the containerizer's Prometheus metrics, one set per
// Containerizer (no globals): the agent registers Collectors().
type metrics struct {
	loggerFailures prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		loggerFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gearbox_logger_failures_total",
			Help: "Containers whose logger was found dead or unable to write.",
		}),
	}
}

// Collectors are the metrics to register.
func (z *Containerizer) Collectors() []prometheus.Collector {
	return []prometheus.Collector{z.metrics.loggerFailures}
}

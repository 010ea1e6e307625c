// Package promserve serves Prometheus metrics over HTTP: the agent's and
// the master's /metrics.
package promserve

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Serve serves the Go and process collectors and cs on addr at /metrics;
// the returned func stops it. An empty addr serves nothing.
func Serve(addr string, log *slog.Logger, cs ...prometheus.Collector) (func(), error) {
	return ServeWithPprof(addr, false, log, cs...)
}

// ServeWithPprof is Serve, and with withPprof also Go's profiles at
// /debug/pprof/ (CPU, heap, allocs, goroutines, trace) on the same
// address: off by default, since a profile shows a process's internals to
// whoever reaches the metrics port.
func ServeWithPprof(addr string, withPprof bool, log *slog.Logger, cs ...prometheus.Collector) (func(), error) {
	if addr == "" {
		return func() {}, nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(cs...)
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(lis) }()
	log.Info("serving metrics", "listen", lis.Addr().String(), "pprof", withPprof)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}, nil
}

// Package grpcserver is the gRPC serving the agent and the master share:
// servers with an authorization check on every call, the standard health
// service and reflection (so grpcurl and grpc_health_probe work), Serve
// loops that this package owns and whose errors it reports, and a stop in
// stages that cannot hang.
package grpcserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
)

// Config says what a Server serves and how it stops.
type Config struct {
	// Services are the names the health service reports SERVING (besides
	// "", the server as a whole) until Stop.
	Services []string
	// Register adds the process's services to each gRPC server.
	Register func(*grpc.Server)
	// Authorize, when set, runs before every unary and streaming call; an
	// error it returns ends the call with that error (a status).
	Authorize func(ctx context.Context, fullMethod string) error
	// Options apply to every gRPC server (codecs, buffers, keepalive).
	Options []grpc.ServerOption

	// The stages of Stop, in order. Refuse makes new work fail (with
	// Unavailable) from now on; EndStreams ends the long-lived calls
	// (follows, waits, agents' streams) that would otherwise hold
	// GracefulStop. Either may be nil.
	Refuse     func()
	EndStreams func()
	// Grace bounds GracefulStop; past it the calls left are cut (Stop).
	// Zero means 5s.
	Grace time.Duration
}

// Server is one or more gRPC servers (one per listener: a unix socket and a
// TCP port may need other credentials) sharing one health service.
type Server struct {
	cfg    Config
	health *health.Server

	mu       sync.Mutex
	servers  []*grpc.Server
	stopping bool
	wg       sync.WaitGroup
	errc     chan error
}

// New builds a Server; it serves nothing until Serve.
func New(cfg Config) *Server {
	if cfg.Grace <= 0 {
		cfg.Grace = 5 * time.Second
	}
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	for _, s := range cfg.Services {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	return &Server{cfg: cfg, health: hs, errc: make(chan error, 1)}
}

// Serve serves lis on a new gRPC server built with the Config's options and
// opts (e.g. the listener's credentials), in a goroutine the Server owns
// until Stop. Its first failure comes out of Err; Serve on a stopped Server
// closes lis.
func (s *Server) Serve(lis net.Listener, opts ...grpc.ServerOption) {
	all := append([]grpc.ServerOption{}, s.cfg.Options...)
	if s.cfg.Authorize != nil {
		all = append(all, grpc.ChainUnaryInterceptor(s.unary), grpc.ChainStreamInterceptor(s.stream))
	}
	gs := grpc.NewServer(append(all, opts...)...)
	if s.cfg.Register != nil {
		s.cfg.Register(gs)
	}
	healthpb.RegisterHealthServer(gs, s.health)
	reflection.Register(gs)

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		lis.Close()
		return
	}
	s.servers = append(s.servers, gs)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			select {
			case s.errc <- fmt.Errorf("serving on %s: %w", lis.Addr(), err):
			default: // one failure is enough to stop for
			}
		}
	}()
}

// Err delivers the first failure of a Serve loop. After one, the caller
// stops the Server (Stop) and returns the error.
func (s *Server) Err() <-chan error { return s.errc }

// Stop stops in stages: refuse new work and report NOT_SERVING, end the
// long-lived streams, then let the calls left finish for up to Grace
// before cutting them. It returns once every Serve loop has returned.
func (s *Server) Stop() {
	s.mu.Lock()
	s.stopping = true
	servers := s.servers
	s.mu.Unlock()
	if s.cfg.Refuse != nil {
		s.cfg.Refuse()
	}
	s.health.Shutdown()
	if s.cfg.EndStreams != nil {
		s.cfg.EndStreams()
	}
	var wg sync.WaitGroup
	deadline, cancel := context.WithTimeout(context.Background(), s.cfg.Grace)
	defer cancel()
	for _, gs := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			done := make(chan struct{})
			go func() { gs.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-deadline.Done():
				gs.Stop()
				<-done
			}
		}()
	}
	wg.Wait()
	s.wg.Wait()
}

func (s *Server) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.cfg.Authorize(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := s.cfg.Authorize(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return handler(srv, ss)
}

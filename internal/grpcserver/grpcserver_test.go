package grpcserver

import (
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

func dial(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// Every call passes the authorization check first, and its error is what
// the client sees; the named services report SERVING.
func TestAuthorizeAndHealth(t *testing.T) {
	s := New(Config{
		Services: []string{"gearbox.test.v1.Thing"},
		Authorize: func(ctx context.Context, method string) error {
			if method == "/grpc.health.v1.Health/Watch" {
				return status.Error(codes.PermissionDenied, "no watching")
			}
			return nil
		},
	})
	lis := listen(t)
	s.Serve(lis)
	defer s.Stop()
	hc := dial(t, lis.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "gearbox.test.v1.Thing"})
	if err != nil {
		t.Fatalf("health check of a named service: %v", err)
	}
	if r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("named service is %v, want SERVING", r.Status)
	}
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = w.Recv()
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a streaming call the check refuses: %v, want PermissionDenied", err)
	}
}

// A Serve loop that fails says so on Err, naming the listener; it is not
// dropped.
func TestServeFailureIsReported(t *testing.T) {
	s := New(Config{})
	lis := listen(t)
	lis.Close()
	s.Serve(lis)
	defer s.Stop()
	select {
	case err := <-s.Err():
		if err == nil || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Err delivered %v, want the listener's failure", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a Serve loop on a closed listener failed and Err said nothing")
	}
}

// Stop runs its stages in order, cuts a stream that does not end by itself
// once Grace passes, and returns with every Serve loop done (goleak checks
// that none is left).
func TestStopInStages(t *testing.T) {
	var mu sync.Mutex
	var stages []string
	note := func(s string) func() {
		return func() { mu.Lock(); stages = append(stages, s); mu.Unlock() }
	}
	s := New(Config{Refuse: note("refuse"), EndStreams: note("end streams"), Grace: 100 * time.Millisecond})
	unixDir := t.TempDir()
	ul, err := net.Listen("unix", unixDir+"/s.sock")
	if err != nil {
		t.Fatal(err)
	}
	tl := listen(t)
	s.Serve(ul)
	s.Serve(tl)
	hc := dial(t, tl.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Health's Watch never ends by itself: only the cut after Grace ends it.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("watch: %v %v, want SERVING", r, err)
	}
	stopped := make(chan struct{})
	go func() { defer close(stopped); s.Stop() }()
	var last error
	for last == nil {
		var r *healthpb.HealthCheckResponse
		r, last = w.Recv()
		if last == nil && r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("while stopping, health says %v, want NOT_SERVING", r.Status)
		}
	}
	if status.Code(last) != codes.Unavailable {
		t.Fatalf("the watch ended with %v, want Unavailable", last)
	}
	select {
	case <-stopped:
	case <-ctx.Done():
		t.Fatal("Stop did not return although Grace had passed")
	}
	if want := []string{"refuse", "end streams"}; !slices.Equal(stages, want) {
		t.Fatalf("stages %v, want %v", stages, want)
	}
	// A stopped server takes no new listener.
	late := listen(t)
	s.Serve(late)
	if _, err := net.Dial("tcp", late.Addr().String()); err == nil {
		t.Fatal("Serve after Stop left a listener accepting connections")
	}
}

// Package leaderconntest serves gRPC on loopback for tests of clients of
// a replicated master: the masters (leader and standbys) a test stands up
// are real servers, so a client's dialing, failing over and following of
// NOT_LEADER hints is what runs.
package leaderconntest

import (
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
)

// Serve serves a gRPC server, with the services register adds, on a
// loopback port until the test ends or stop is called; addr is its
// host:port (what a standby's NOT_LEADER hint names).
func Serve(t testing.TB, register func(*grpc.Server)) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	register(srv)
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(l) })
	stop = func() { srv.Stop(); wg.Wait() }
	t.Cleanup(stop)
	return l.Addr().String(), stop
}

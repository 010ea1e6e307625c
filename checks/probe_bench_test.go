package checks

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// BenchmarkProbeHTTP is one HTTP check's cost to the agent (the server's
// side included), in the test's own network namespace.
func BenchmarkProbeHTTP(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	c := Check{Kind: HTTP, Port: uint16(srv.Listener.Addr().(*net.TCPAddr).Port), Path: "/", Scheme: "http", Timeout: time.Second}
	env := ownProcess(nil)
	var proc process
	b.ReportAllocs()
	for b.Loop() {
		if ok, out := probe(context.Background(), env, "c", c, &proc); !ok {
			b.Fatal(out)
		}
	}
}

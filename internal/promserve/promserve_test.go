package promserve

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
)

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func get(t *testing.T, url string) int {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// Profiles are served only when asked for; metrics always.
func TestPprofOptIn(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, on := range []bool{false, true} {
		addr := freeAddr(t)
		stop, err := ServeWithPprof(addr, on, log)
		if err != nil {
			t.Fatal(err)
		}
		if c := get(t, "http://"+addr+"/metrics"); c != http.StatusOK {
			t.Errorf("pprof=%v: /metrics answered %d", on, c)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		if c := get(t, "http://"+addr+"/debug/pprof/heap"); c != want {
			t.Errorf("pprof=%v: /debug/pprof/heap answered %d, want %d", on, c, want)
		}
		stop()
	}
}

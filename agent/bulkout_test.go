package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/internal/bulkout"
)

// The agent's unix socket gives gRPC its connections untouched (first
// byte included) and bulk output ones to the session whose token they
// bring; an unknown token is refused; Close ends a connection that never
// says what it is.
func TestSplitListener(t *testing.T) {
	dir, err := os.MkdirTemp("", "sl")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "agent.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	bulk := &bulkOutputs{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sl := newSplitListener(l, bulk)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A gRPC connection, and its preface, reach Accept whole.
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
	ac, err := sl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(ac, got); err != nil || string(got) != "PRI" {
		t.Errorf("gRPC's connection starts %q (%v), want PRI", got, err)
	}
	ac.Close()

	// A bulk connection reaches its session, once.
	slot := bulk.register()
	uc, err := bulkout.Dial(ctx, path, slot.token)
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	var sc *net.UnixConn
	select {
	case sc = <-slot.conn:
	case <-ctx.Done():
		t.Fatal("the bulk connection never reached its session")
	}
	w := newBulkWriter(ctx, &bulkSlot{conn: make(chan *net.UnixConn, 1)}, new(atomic.Int64))
	w.slot.conn <- sc
	pr, pw, _ := os.Pipe()
	go func() { pw.Write([]byte("output")); pw.Close() }()
	if n, err := w.ReadFrom(pr); n != 6 || err != nil || w.n.Load() != 6 {
		t.Errorf("bulk writer: %d bytes, %v, counted %d", n, err, w.n.Load())
	}
	if b, err := io.ReadAll(uc); string(b) != "output" || err != nil {
		t.Errorf("the client read %q, %v; want the output then EOF", b, err)
	}
	again, err := bulkout.Dial(ctx, path, slot.token)
	if err != nil {
		t.Fatal(err)
	}
	again.SetReadDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(again); len(b) != 0 || err != nil {
		t.Errorf("a used token: read %q, %v; want the connection closed at once", b, err)
	}
	again.Close()
	w.close(bulk)

	// Silent until Close: Close ends it and waits for it.
	silent, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	sl.Close()
	sl.wait()
	if _, err := sl.Accept(); err == nil {
		t.Error("Accept after Close returned a connection")
	}
}

package agent

import (
	"bytes"
	"context"
	crand "crypto/rand"
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
	// 3 MiB through a pipe (spliced), in writes of every size.
	want := make([]byte, 3<<20)
	crand.Read(want)
	pr, pw, _ := os.Pipe()
	defer pr.Close()
	go func() {
		defer pw.Close()
		for off, k := 0, 1; off < len(want); off, k = off+k, k*3%100003+1 {
			pw.Write(want[off:min(off+k, len(want))])
		}
	}()
	read := make(chan []byte)
	go func() { b, _ := io.ReadAll(uc); read <- b }()
	if n, err := w.ReadFrom(pr); n != int64(len(want)) || err != nil || w.n.Load() != n {
		t.Errorf("bulk writer: %d bytes, %v, counted %d; want %d", n, err, w.n.Load(), len(want))
	}
	if b := <-read; !bytes.Equal(b, want) {
		t.Errorf("the client read %d bytes, not the %d written (or not the same)", len(b), len(want))
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

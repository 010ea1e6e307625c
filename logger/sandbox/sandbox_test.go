package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/logger"
)

// A follow sees everything written while it runs, and what was written
// just before Done closed.
func TestReadFollowsUntilDone(t *testing.T) {
	dir := t.TempDir()
	l := &Logger{PollInterval: 5 * time.Millisecond}
	c := logger.Container{ID: "c", Sandbox: dir}
	if _, err := (&Logger{Binary: "/bin/true"}).Prepare(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var want bytes.Buffer
	go func() {
		f, _ := os.OpenFile(Path(dir, logger.Stdout), os.O_WRONLY|os.O_APPEND, 0)
		defer f.Close()
		for i := range 200 {
			line := fmt.Sprintf("line %d\n", i)
			want.WriteString(line)
			f.WriteString(line)
			if i%50 == 0 {
				time.Sleep(10 * time.Millisecond)
			}
		}
		close(done)
	}()
	var got bytes.Buffer
	var errs bytes.Buffer
	err := l.Read(context.Background(), logger.ReadRequest{Container: c, Follow: true, Done: done}, func(s logger.Stream, b []byte) error {
		if s == logger.Stdout {
			got.Write(b)
		} else {
			errs.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != want.String() || errs.Len() != 0 {
		t.Fatalf("follow read %d bytes, want %d (stderr %q)", got.Len(), want.Len(), errs.String())
	}
}

func TestReadStopsWithContext(t *testing.T) {
	dir := t.TempDir()
	c := logger.Container{ID: "c", Sandbox: dir}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := (&Logger{}).Read(ctx, logger.ReadRequest{Container: c, Follow: true, Done: make(chan struct{})}, func(logger.Stream, []byte) error { return nil })
	if err != context.DeadlineExceeded {
		t.Fatalf("got %v, want the context's error", err)
	}
}

func TestNewChecksTheBinary(t *testing.T) {
	for _, p := range []string{"relative/gearbox-logger", "/nonexistent/gearbox-logger", t.TempDir()} {
		if _, err := New(p); err == nil {
			t.Errorf("New(%q) accepted", p)
		}
	}
}

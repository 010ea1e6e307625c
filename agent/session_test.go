package agent

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func openSession(t *testing.T, ts *testServer, launch *agentv1.SessionLaunch) agentv1.Agent_LaunchNestedContainerSessionClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	st, err := ts.client.LaunchNestedContainerSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if launch != nil {
		if err := st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: launch}}); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// recvAll reads a session to its end: its stdout and its exit code, or
// the error that ended it.
func recvAll(st agentv1.Agent_LaunchNestedContainerSessionClient) (stdout []byte, exit *int32, err error) {
	for {
		m, err := st.Recv()
		if err != nil {
			return stdout, exit, err
		}
		switch f := m.GetFrame().(type) {
		case *agentv1.SessionResponse_Stdout:
			stdout = append(stdout, f.Stdout...)
		case *agentv1.SessionResponse_Exit:
			c := f.Exit.GetExitCode()
			exit = &c
		}
	}
}

// A session carries stdin to the process and its output back, passes the
// terminal's size at start and on resize, ends with the exit code, and is
// audited with what it moved.
func TestSessionFraming(t *testing.T) {
	ts := newTestServer(t, ResourceSet{})
	ts.fake.put(containerizer.Container{ID: "c1", State: containerizer.TaskRunning})
	st := openSession(t, ts, &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"cat", "-", "x"}, Tty: true,
		Size: &agentv1.WindowSize{Width: 80, Height: 24}})
	send := func(r *agentv1.SessionRequest) {
		t.Helper()
		if err := st.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: []byte("hello ")}})
	send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Resize{Resize: &agentv1.WindowSize{Width: 100, Height: 30}}})
	send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: []byte("world")}})
	send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	out, exit, err := recvAll(st)
	if status.Code(err) != codes.OK && err.Error() != "EOF" {
		t.Fatalf("session ended with %v", err)
	}
	if !bytes.Equal(out, []byte("hello world")) {
		t.Errorf("stdout %q, want %q", out, "hello world")
	}
	if exit == nil || *exit != 3 {
		t.Fatalf("exit %v, want 3 (the fake exits with its argument count)", exit)
	}
	ts.fake.mu.Lock()
	ex := ts.fake.execs[0]
	ts.fake.mu.Unlock()
	if !ex.cfg.TTY || ex.cfg.Width != 80 || ex.cfg.Height != 24 {
		t.Errorf("exec started with tty %v %dx%d, want a TTY of 80x24", ex.cfg.TTY, ex.cfg.Width, ex.cfg.Height)
	}
	select {
	case sz := <-ex.resized:
		if sz != [2]uint32{100, 30} {
			t.Errorf("resized to %v, want 100x30", sz)
		}
	default:
		t.Error("the resize frame never reached the process")
	}
	select {
	case <-ex.closed:
	default:
		t.Error("the exec was not closed when its session ended")
	}
	rec := <-ts.audits
	if rec.ContainerID != "c1" || rec.ExitCode == nil || *rec.ExitCode != 3 || rec.BytesIn != 11 || rec.BytesOut != 11 || !rec.TTY {
		t.Errorf("audit record %+v: want c1, exit 3, 11 bytes in and out, tty", rec)
	}
}

// Frames out of order or out of range end the session with
// InvalidArgument and a message that says which; the process goes.
func TestSessionBadFrames(t *testing.T) {
	ts := newTestServer(t, ResourceSet{})
	ts.fake.put(containerizer.Container{ID: "c1", State: containerizer.TaskRunning})
	for _, tc := range []struct {
		name  string
		first *agentv1.SessionRequest
		then  *agentv1.SessionRequest
		want  string
	}{
		{name: "stdin first", first: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: []byte("x")}}, want: "first message of a session must be its launch"},
		{name: "no command", first: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "c1"}}}, want: "names no command"},
		{name: "bad id", first: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "a/b", Command: []string{"sh"}}}}, want: ""},
		{name: "zero size", first: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"sh"}, Tty: true, Size: &agentv1.WindowSize{Width: 0, Height: 24}}}}, want: "window size 0x24"},
		{name: "zero resize", first: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"sh"}}}},
			then: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Resize{Resize: &agentv1.WindowSize{Width: 10}}}, want: "window size 10x0"},
		{name: "second launch", first: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"sh"}}}},
			then: &agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Launch{Launch: &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"sh"}}}}, want: "takes one launch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := openSession(t, ts, nil)
			st.Send(tc.first)
			if tc.then != nil {
				st.Send(tc.then)
			}
			_, exit, err := recvAll(st)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("ended with %v (exit %v), want InvalidArgument saying %q", err, exit, tc.want)
			}
		})
	}
	ts.fake.mu.Lock()
	defer ts.fake.mu.Unlock()
	for i, ex := range ts.fake.execs {
		select {
		case <-ex.closed:
		default:
			t.Errorf("exec %d outlived its refused session", i)
		}
	}
}

// max_sessions caps the sessions open at once; one that ends frees its
// place.
func TestSessionCap(t *testing.T) {
	ts := newTestServer(t, ResourceSet{})
	ts.fake.put(containerizer.Container{ID: "c1", State: containerizer.TaskRunning})
	launch := &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"sh"}}
	var open []agentv1.Agent_LaunchNestedContainerSessionClient
	for range 2 {
		st := openSession(t, ts, launch)
		open = append(open, st)
	}
	// Both are running once their execs exist.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ts.fake.mu.Lock()
		n := len(ts.fake.execs)
		ts.fake.mu.Unlock()
		if n == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 2 sessions started", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, _, err := recvAll(openSession(t, ts, launch))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "max_sessions") {
		t.Fatalf("a third session with max_sessions 2: %v, want ResourceExhausted naming max_sessions", err)
	}
	open[0].CloseSend() // stdin ends: the fake exits
	if _, exit, err := recvAll(open[0]); exit == nil {
		t.Fatalf("first session: %v", err)
	}
	third := openSession(t, ts, launch)
	third.CloseSend()
	if _, exit, err := recvAll(third); exit == nil || *exit != 1 {
		t.Fatalf("a session once one closed: exit %v, %v", exit, err)
	}
	open[1].CloseSend()
	recvAll(open[1])
}

package agent

import (
	"bytes"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gearboxd/gearbox/containerizer"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// An output chunk is on the wire exactly a SessionResponse's proto
// encoding, whatever library decodes it.
func TestSessionCodecWire(t *testing.T) {
	for _, stderr := range []bool{false, true} {
		for _, n := range []int{0, 1, 127, 128, 16 << 10, readBuf} {
			bp := outputBufs.Get(readBuf)
			data := (*bp)[:n]
			for i := range data {
				data[i] = byte(i * 7)
			}
			want := append([]byte(nil), data...)
			*bp = data
			bs, err := sessionCodec{}.Marshal(outputChunk{stderr: stderr, buf: bp})
			if err != nil {
				t.Fatal(err)
			}
			var got agentv1.SessionResponse
			if err := proto.Unmarshal(bs.Materialize(), &got); err != nil {
				t.Fatalf("stderr=%v, %d bytes: %v", stderr, n, err)
			}
			out := got.GetStdout()
			if stderr {
				out = got.GetStderr()
			}
			if _, isErr := got.Frame.(*agentv1.SessionResponse_Stderr); isErr != stderr || !bytes.Equal(out, want) {
				t.Errorf("stderr=%v, %d bytes: decoded %T of %d bytes", stderr, n, got.Frame, len(out))
			}
			bs.Free()
		}
	}
	// Other messages are plain proto.
	bs, err := sessionCodec{}.Marshal(&agentv1.SessionResponse{Frame: &agentv1.SessionResponse_Exit{Exit: &agentv1.SessionExit{ExitCode: 3}}})
	if err != nil {
		t.Fatal(err)
	}
	var got agentv1.SessionResponse
	if err := (sessionCodec{}).Unmarshal(bs, &got); err != nil || got.GetExit().GetExitCode() != 3 {
		t.Errorf("exit frame: %v, %v", &got, err)
	}
}

// Bulk output arrives whole and in order: the buffers gRPC still holds
// are not read into again before it has written them.
func TestSessionBulkOutputIntact(t *testing.T) {
	ts := newTestServer(t, ResourceSet{})
	ts.fake.put(containerizer.Container{ID: "c1", State: containerizer.TaskRunning})
	st := openSession(t, ts, &agentv1.SessionLaunch{ContainerId: "c1", Command: []string{"cat"}})
	want := make([]byte, 8<<20)
	r := rand.NewChaCha8([32]byte{1})
	r.Read(want)
	errc := make(chan error, 1)
	go func() {
		for b := want; len(b) > 0; {
			k := min(len(b), 100<<10)
			if err := st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_Stdin{Stdin: b[:k]}}); err != nil {
				errc <- err
				return
			}
			b = b[k:]
		}
		errc <- st.Send(&agentv1.SessionRequest{Frame: &agentv1.SessionRequest_CloseStdin{CloseStdin: &agentv1.StdinClose{}}})
	}()
	out, exit, _ := recvAll(st)
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if exit == nil || *exit != 1 {
		t.Fatalf("exit %v, want 1", exit)
	}
	if !bytes.Equal(out, want) {
		i := 0
		for i < min(len(out), len(want)) && out[i] == want[i] {
			i++
		}
		t.Fatalf("got %d bytes, want %d; they differ from byte %d", len(out), len(want), i)
	}
}

// frameSink is a session stream that encodes what is sent as gRPC would
// (sessionCodec), slowly, and keeps the stdout it decodes.
type frameSink struct {
	agentv1.Agent_LaunchNestedContainerSessionServer
	mu     sync.Mutex
	out    []byte
	frames int
}

func (f *frameSink) SendMsg(m any) error {
	bs, err := sessionCodec{}.Marshal(m)
	if err != nil {
		return err
	}
	time.Sleep(time.Millisecond) // a slow client: frames wait
	var r agentv1.SessionResponse
	err = proto.Unmarshal(bs.Materialize(), &r)
	bs.Free()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, r.GetStdout()...)
	f.frames++
	return err
}

func (f *frameSink) Send(m *agentv1.SessionResponse) error { return f.SendMsg(m) }

// Output read from a real pipe, short reads topped up while frames wait,
// arrives whole and in order.
func TestSessionPipeOutputIntact(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 6<<20)
	rand.NewChaCha8([32]byte{2}).Read(want)
	go func() {
		for b := want; len(b) > 0; {
			k := min(len(b), 5000)
			pw.Write(b[:k])
			b = b[k:]
		}
		pw.Close()
	}()
	sink := &frameSink{}
	var n atomic.Int64
	q := newOutputQueue(sink, &n)
	got, err := queueWriter{q: q}.ReadFrom(pr)
	pr.Close()
	if err != nil || got != int64(len(want)) {
		t.Fatalf("ReadFrom: %d bytes, %v", got, err)
	}
	if err := q.flush(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sink.out, want) {
		t.Fatalf("%d bytes arrived, want %d, intact: %v", len(sink.out), len(want), bytes.Equal(sink.out, want[:min(len(sink.out), len(want))]))
	}
	t.Logf("%d frames for %d writes of 5000 bytes", sink.frames, len(want)/5000)
}

// topUp takes what the pipe holds, in order, and does not wait for more.
func TestTopUp(t *testing.T) {
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	rc, err := pr.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	copy(buf, "head:")
	pw.Write([]byte("one,"))
	pw.Write([]byte("two,"))
	if n := topUp(rc, buf[5:]); n != 8 || string(buf[:5+n]) != "head:one,two," {
		t.Fatalf("topUp read %d: %q", n, buf[:5+max(n, 0)])
	}
	done := make(chan int)
	go func() { done <- topUp(rc, buf) }()
	select {
	case n := <-done:
		if n != 0 {
			t.Errorf("an empty pipe gave %d bytes", n)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("topUp waited on an empty pipe")
	}
	pw.Write(make([]byte, 300))
	if n := topUp(rc, buf); n != len(buf) {
		t.Errorf("topUp of a full buffer read %d, want %d", n, len(buf))
	}
}

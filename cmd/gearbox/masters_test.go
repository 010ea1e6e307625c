package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/internal/leaderconn/leaderconntest"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// haOperator is one master of a replicated master as the CLI sees it: a
// real gRPC server on loopback. A standby (leader != "") refuses operator
// calls with typesv1.NotLeader(leader) and answers GetMasters; the
// leader's Subscribe is the test's.
type haOperator struct {
	masterv1.UnimplementedOperatorServer
	addr      string
	leader    string
	subscribe func(since uint64, st grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error
	mu        sync.Mutex
	sinces    []uint64
}

func startOperator(t *testing.T, o *haOperator) *haOperator {
	t.Helper()
	o.addr, _ = leaderconntest.Serve(t, func(s *grpc.Server) { masterv1.RegisterOperatorServer(s, o) })
	return o
}

func (o *haOperator) GetMasters(context.Context, *masterv1.GetMastersRequest) (*masterv1.GetMastersResponse, error) {
	return &masterv1.GetMastersResponse{Masters: []*masterv1.MasterInfo{
		{Address: "m1:5050", Version: "v1.2", Leader: true, ElectedAt: timestamppb.Now()},
		{Address: "m2:5050", Version: "v1.2"},
	}}, nil
}

func (o *haOperator) Subscribe(req *masterv1.SubscribeRequest, st grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
	if o.leader != "" {
		return typesv1.NotLeader(o.leader)
	}
	o.mu.Lock()
	o.sinces = append(o.sinces, req.GetSince())
	o.mu.Unlock()
	return o.subscribe(req.GetSince(), st)
}

func send(st grpc.ServerStreamingServer[masterv1.SubscribeResponse], evs ...*masterv1.Event) error {
	for _, ev := range evs {
		ev.Time = timestamppb.Now()
	}
	return st.Send(&masterv1.SubscribeResponse{Events: evs})
}

func gearbox(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetArgs(args)
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// gearbox masters asks whichever master of the list answers first.
func TestMastersCommand(t *testing.T) {
	m := startOperator(t, &haOperator{leader: "m1:5050"})
	out, _, err := gearbox(t, "masters", "--master", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ADDRESS") || !strings.Contains(lines[1], "m1:5050") || !strings.Contains(lines[1], "true") ||
		!strings.Contains(lines[1], "ago") || !strings.Contains(lines[2], "false") {
		t.Errorf("gearbox masters:\n%s", out)
	}
	out, _, err = gearbox(t, "masters", "-o", "json", "--master", m.addr)
	var got []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || len(got) != 2 || got[0]["address"] != "m1:5050" || got[0]["leader"] != true {
		t.Errorf("gearbox masters -o json: %v\n%s", err, out)
	}
}

// gearbox events follows the leader: the stream goes through a standby to
// the leader; when that leader steps down it resumes after the last event
// at the new one, and takes a new snapshot when the new leader has not
// got the events after it (OutOfRange), saying so on stderr.
func TestEventsResumeAtTheNewLeader(t *testing.T) {
	second := startOperator(t, &haOperator{})
	second.subscribe = func(since uint64, st grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
		if since != 0 {
			return status.Errorf(codes.OutOfRange, "events after %d are of an earlier leader", since)
		}
		return send(st, &masterv1.Event{Type: masterv1.Event_SUBSCRIBED, Seq: 2 << 32, Subscribed: &masterv1.Subscribed{State: &masterv1.GetStateResponse{}}})
	}
	first := startOperator(t, &haOperator{})
	first.subscribe = func(since uint64, st grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
		if since == 0 {
			send(st, &masterv1.Event{Type: masterv1.Event_SUBSCRIBED, Seq: 5, Subscribed: &masterv1.Subscribed{State: &masterv1.GetStateResponse{}}})
		}
		send(st, &masterv1.Event{Type: masterv1.Event_TASK_ADDED, Seq: 6, Task: &masterv1.Task{Id: "web", AgentId: "a1"}})
		if since == 6 {
			return nil
		}
		return typesv1.NotLeader(second.addr) // it steps down: the stream ends
	}
	standby := startOperator(t, &haOperator{leader: first.addr})

	out, errOut, err := gearbox(t, "events", "--master", standby.addr+","+first.addr+","+second.addr)
	if err != nil {
		t.Fatalf("gearbox events: %v\nstderr: %s", err, errOut)
	}
	for _, want := range []string{"5\t", "6\t", "task web on a1", "8589934592\t"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "resuming after event 6") || !strings.Contains(errOut, "taking a new snapshot") {
		t.Errorf("stderr does not say it resumed and took a new snapshot:\n%s", errOut)
	}
	if len(second.sinces) != 2 || second.sinces[0] != 6 || second.sinces[1] != 0 {
		t.Errorf("the new leader was asked for the events after %v, want [6 0]", second.sinces)
	}

	// A new leader that has the events: they resume after 6, no snapshot.
	second.subscribe = first.subscribe
	first.subscribe = func(since uint64, st grpc.ServerStreamingServer[masterv1.SubscribeResponse]) error {
		send(st, &masterv1.Event{Type: masterv1.Event_SUBSCRIBED, Seq: 5, Subscribed: &masterv1.Subscribed{State: &masterv1.GetStateResponse{}}},
			&masterv1.Event{Type: masterv1.Event_TASK_ADDED, Seq: 6, Task: &masterv1.Task{Id: "web", AgentId: "a1"}})
		return typesv1.NotLeader(second.addr)
	}
	second.sinces = nil
	out, errOut, err = gearbox(t, "events", "--master", first.addr+","+second.addr)
	if err != nil || strings.Contains(errOut, "snapshot") || strings.Count(out, "task web") != 2 || len(second.sinces) != 1 || second.sinces[0] != 6 {
		t.Errorf("resume without a gap: err %v, asked after %v\nstdout:\n%s\nstderr:\n%s", err, second.sinces, out, errOut)
	}
}

// A master list with a bad entry is refused before anything is dialed.
func TestMasterListFlag(t *testing.T) {
	_, _, err := gearbox(t, "agents", "--master", "m1:5050,,m3:5050")
	if err == nil || !strings.Contains(err.Error(), `master address 2 of 3 ("")`) {
		t.Errorf("gearbox agents --master m1:5050,,m3:5050: %v", err)
	}
}

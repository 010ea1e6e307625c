package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// listServer answers the listings with fixed rows and records the last
// request of each kind, so a test sees what the CLI sent and printed.
type listServer struct {
	mu       sync.Mutex
	requests map[string]proto.Message
}

// listAgent and listMaster are its two APIs (both have GetHealth).
type (
	listAgent struct {
		agentv1.UnimplementedAgentServer
		*listServer
	}
	listMaster struct {
		masterv1.UnimplementedOperatorServer
		*listServer
	}
)

func (s *listServer) record(name string, req proto.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests[name] = req
}

func (s *listServer) request(name string) proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests[name]
}

var listRes = &masterv1.Resources{Cpus: 2, MemoryBytes: 1 << 30}

func (s listMaster) GetAgents(_ context.Context, req *masterv1.GetAgentsRequest) (*masterv1.GetAgentsResponse, error) {
	s.record("agents", req)
	return &masterv1.GetAgentsResponse{Agents: []*masterv1.AgentInfo{
		{Id: "a1", Hostname: "host-1", State: masterv1.AgentState_AGENT_ACTIVE, Connected: true, Resources: listRes, Used: &masterv1.Resources{Cpus: 0.5},
			Attributes: map[string]string{"rack": "r1", "zone": "z"}},
		{Id: "a2-long-id", Hostname: "h2", State: masterv1.AgentState_AGENT_GONE, GoneByOperator: true},
	}}, nil
}

func (s listMaster) GetTasks(_ context.Context, req *masterv1.GetTasksRequest) (*masterv1.GetTasksResponse, error) {
	s.record("tasks", req)
	return &masterv1.GetTasksResponse{Tasks: []*masterv1.Task{
		{Id: "t1", AgentId: "a1", Image: "busybox", State: typesv1.TaskState_TASK_RUNNING, Healthy: proto.Bool(true), Resources: listRes,
			IpAddresses: []string{"10.89.0.2"}, PortMappings: []*typesv1.PortMapping{{HostPort: 31000, ContainerPort: 80}}},
		{Id: "t2", AgentId: "a1", Image: "x", State: typesv1.TaskState_TASK_FAILED, Reason: typesv1.Reason_REASON_CONTAINER_LAUNCH_FAILED,
			ExitCode: proto.Int32(3), RestartCount: 2, Message: strings.Repeat("m", 70)},
	}}, nil
}

func (s listMaster) GetFrameworks(_ context.Context, req *masterv1.GetFrameworksRequest) (*masterv1.GetFrameworksResponse, error) {
	s.record("frameworks", req)
	return &masterv1.GetFrameworksResponse{Frameworks: []*masterv1.Framework{
		{Id: "f1", Name: "sleep", Roles: []string{"web", "batch"}, Connected: true, ActiveTasks: 3, Used: listRes, Offered: listRes, PendingUpdates: 1},
		{Id: "f2", Name: "other", Principal: "p", FailoverDeadline: timestamppb.New(time.Now().Add(time.Hour))},
	}}, nil
}

func (s listMaster) GetRoles(_ context.Context, req *masterv1.GetRolesRequest) (*masterv1.GetRolesResponse, error) {
	s.record("roles", req)
	return &masterv1.GetRolesResponse{Roles: []*masterv1.Role{{Name: "web", Weight: 2, Frameworks: []string{"f1"}, Allocated: listRes}, {Name: "*", Weight: 1}}}, nil
}

func (s listMaster) GetOffers(_ context.Context, req *masterv1.GetOffersRequest) (*masterv1.GetOffersResponse, error) {
	s.record("offers", req)
	return &masterv1.GetOffersResponse{Offers: []*masterv1.OfferInfo{{Id: "o1", FrameworkId: "f1", AgentId: "a1", Hostname: "host-1", Role: "web", Resources: listRes}}}, nil
}

func (s listMaster) GetWeights(_ context.Context, req *masterv1.GetWeightsRequest) (*masterv1.GetWeightsResponse, error) {
	s.record("weights", req)
	return &masterv1.GetWeightsResponse{Weights: []*masterv1.WeightInfo{{Role: "web", Weight: 2.5}}}, nil
}

func (s listAgent) GetContainers(_ context.Context, req *agentv1.GetContainersRequest) (*agentv1.GetContainersResponse, error) {
	s.record("ps", req)
	return &agentv1.GetContainersResponse{Containers: []*agentv1.Container{
		{Id: "web", Image: "docker.io/library/busybox:latest", Args: []string{"sh", "-c", "sleep 1000"}, State: typesv1.TaskState_TASK_FINISHED,
			ExitCode: proto.Int32(0), Network: "gearbox", IpAddresses: []string{"10.89.0.3"}, PortMappings: []*typesv1.PortMapping{{HostPort: 8080, ContainerPort: 80, Protocol: "udp"}}},
		{Id: "db", Image: "registry:5000/db:1", State: typesv1.TaskState_TASK_KILLED},
	}}, nil
}

func (s listAgent) ListImages(_ context.Context, req *agentv1.ListImagesRequest) (*agentv1.ListImagesResponse, error) {
	s.record("images", req)
	return &agentv1.ListImagesResponse{Images: []*agentv1.Image{{Name: "docker.io/library/busybox:latest", Digest: "sha256:0123456789abcdef0123456789abcdef", Size: 4 << 20}}}, nil
}

func (s listAgent) GetState(_ context.Context, req *agentv1.GetStateRequest) (*agentv1.GetStateResponse, error) {
	s.record("info", req)
	return &agentv1.GetStateResponse{AgentId: "a1", Hostname: "host-1", ContainersRunning: 1, ContainersTotal: 2, Master: "m:5050", PendingStatusUpdates: 4,
		Total: &agentv1.ResourceSet{Cpus: 2, Memory: 1 << 30, Disk: 10 << 30}, Free: &agentv1.ResourceSet{Cpus: 1.5},
		Attributes: map[string]string{"rack": "r1"}, ResourceLabels: map[string]string{"gpu": "none"},
		Runtimes: []*agentv1.Runtime{{Name: "runc", Type: "io.containerd.runc.v2", Binary: "runc", Available: true}, {Name: "crun", Binary: "crun", UnavailableReason: "not found"}}}, nil
}

// startListServer serves the agent and the operator APIs on one unix socket.
func startListServer(t *testing.T) (*listServer, string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := &listServer{requests: map[string]proto.Message{}}
	g := grpc.NewServer()
	agentv1.RegisterAgentServer(g, listAgent{listServer: s})
	masterv1.RegisterOperatorServer(g, listMaster{listServer: s})
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.Serve(l)
	}()
	t.Cleanup(func() {
		g.Stop()
		<-done
	})
	return s, "unix://" + sock
}

func runCLI(t *testing.T, addr string, args ...string) (string, error) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(append([]string{"--agent", addr, "--master", addr}, args...))
	err := root.Execute()
	return out.String(), err
}

// durations matches the ages a listing prints (time.Since's "1h2m3s"),
// which change from run to run.
var durations = regexp.MustCompile(`\b[0-9][0-9hms.]*s\b`)

// The listings print the same tables as before they shared listCmd.
func TestListTables(t *testing.T) {
	_, addr := startListServer(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"agents"}, "ID           HOSTNAME   STATE                CONNECTED   CPUS/MEM USED   CPUS/MEM TOTAL   ATTRIBUTES       LAST HEARTBEAT\na1           host-1     ACTIVE               true        0.5/0 B         2/1.0 GiB        rack:r1;zone:z   D ago\na2-long-id   h2         GONE (by operator)   false       0/0 B           0/0 B                             D ago\n"},
		{[]string{"tasks"}, "ID   AGENT   IMAGE     STATE                    REASON                    EXIT   RESTARTS   CPUS/MEM    IP          PORTS        MESSAGE\nt1   a1      busybox   TASK_RUNNING (healthy)   -                         -      0          2/1.0 GiB   10.89.0.2   31000->80/   \nt2   a1      x         TASK_FAILED              CONTAINER_LAUNCH_FAILED   3      2          0/0 B       -           -            mmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmmm...\n"},
		{[]string{"frameworks"}, "ID   NAME    ROLES       PRINCIPAL   CONNECTED               TASKS   CPUS/MEM USED   OFFERED     PENDING UPDATES\nf1   sleep   web,batch   -           true                    3       2/1.0 GiB       2/1.0 GiB   1\nf2   other               p           no, removed in D   0       0/0 B           0/0 B       0\n"},
		{[]string{"roles"}, "ROLE   WEIGHT   FRAMEWORKS   CPUS/MEM ALLOCATED   OFFERED\nweb    2        f1           2/1.0 GiB            0/0 B\n*      1        -            0/0 B                0/0 B\n"},
		{[]string{"offers"}, "ID   FRAMEWORK   AGENT   HOSTNAME   ROLE   CPUS/MEM    AGE\no1   f1          a1      host-1     web    2/1.0 GiB   D\n"},
		{[]string{"weights"}, "ROLE   WEIGHT\nweb    2.5\n"},
		{[]string{"ps"}, "CONTAINER ID   IMAGE                COMMAND              CREATED   STATUS         NETWORK   IP          PORTS\nweb            busybox:latest       \"sh -c sleep 1000\"   -         Finished (0)   gearbox   10.89.0.3   8080->80/udp\ndb             registry:5000/db:1   \"\"                   -         Killed         host                  \n"},
		{[]string{"image", "ls"}, "IMAGE                              DIGEST         SIZE      CREATED\ndocker.io/library/busybox:latest   0123456789ab   4.0 MiB   -\n"},
		{[]string{"info"}, "Agent ID:     a1\nHostname:     host-1\nContainers:   1 running, 2 in all\nMaster:       m:5050, NOT connected (retrying; see the agent's log), 4 status updates unacknowledged\nTotal:        cpus 2, mem 1.0 GiB, disk 10.0 GiB\nAllocated:    cpus 0, mem 0 B, disk 0 B\nFree:         cpus 1.5, mem 0 B, disk 0 B\nAttribute:    rack:r1\nLabel:        gpu=none\nRuntime:      runc (io.containerd.runc.v2 runc) available\nRuntime:      crun ( crun) UNAVAILABLE: not found\n"},
	} {
		got, err := runCLI(t, addr, tc.args...)
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		got = durations.ReplaceAllString(got, "D")
		if got != tc.want {
			t.Errorf("%v printed\n%s\nwant\n%s\n%q", tc.args, got, tc.want, got)
		}
	}
}

// -o json prints the listed messages; the command's flags reach the request;
// an unknown -o is refused before anything is asked.
func TestListJSONAndFlags(t *testing.T) {
	s, addr := startListServer(t)
	for _, tc := range []struct {
		args    []string
		name    string
		wantIDs []string
		wantReq proto.Message
	}{
		{[]string{"tasks", "--agent-id", "a1", "-o", "json"}, "tasks", []string{"t1", "t2"}, &masterv1.GetTasksRequest{AgentId: "a1"}},
		{[]string{"ps", "-a", "-o", "json"}, "ps", []string{"web", "db"}, &agentv1.GetContainersRequest{All: true}},
		{[]string{"ps", "-o", "json"}, "ps", []string{"web", "db"}, &agentv1.GetContainersRequest{}},
		{[]string{"agents", "-o", "json"}, "agents", []string{"a1", "a2-long-id"}, &masterv1.GetAgentsRequest{}},
		{[]string{"frameworks", "-o", "json"}, "frameworks", []string{"f1", "f2"}, &masterv1.GetFrameworksRequest{}},
		{[]string{"offers", "-o", "json"}, "offers", []string{"o1"}, &masterv1.GetOffersRequest{}},
	} {
		got, err := runCLI(t, addr, tc.args...)
		if err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		var items []struct{ ID string }
		if err := json.Unmarshal([]byte(got), &items); err != nil {
			t.Fatalf("%v printed %q: %v", tc.args, got, err)
		}
		var ids []string
		for _, it := range items {
			ids = append(ids, it.ID)
		}
		if !slices.Equal(ids, tc.wantIDs) {
			t.Errorf("%v listed %v, want %v", tc.args, ids, tc.wantIDs)
		}
		if req := s.request(tc.name); !proto.Equal(req, tc.wantReq) {
			t.Errorf("%v asked %v, want %v", tc.args, req, tc.wantReq)
		}
	}

	got, err := runCLI(t, addr, "info", "-o", "json")
	var info []struct {
		AgentID string `json:"agent_id"`
	}
	if err != nil || json.Unmarshal([]byte(got), &info) != nil || len(info) != 1 || info[0].AgentID != "a1" {
		t.Errorf("info -o json printed %q, %v; want one object of agent a1", got, err)
	}

	_, err = runCLI(t, addr, "weights", "-o", "yaml")
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 125 || !strings.Contains(err.Error(), `"yaml"`) {
		t.Errorf("weights -o yaml: %v, want exit 125 naming the format", err)
	}
	if req := s.request("weights"); req != nil {
		t.Errorf("weights -o yaml asked the master %v", req)
	}
}

func (s listMaster) TeardownFramework(_ context.Context, req *masterv1.TeardownFrameworkRequest) (*masterv1.TeardownFrameworkResponse, error) {
	s.record("teardown", req)
	return &masterv1.TeardownFrameworkResponse{}, nil
}

func (s listMaster) MarkAgentGone(_ context.Context, req *masterv1.MarkAgentGoneRequest) (*masterv1.MarkAgentGoneResponse, error) {
	s.record("mark-gone", req)
	return &masterv1.MarkAgentGoneResponse{}, status.Errorf(codes.NotFound, "no agent %q", req.AgentId)
}

// The commands that have the master act on one ID send it and print it
// once the master has acted; a refusal is the master's error, nothing printed.
func TestMasterActOnOneID(t *testing.T) {
	s, addr := startListServer(t)
	got, err := runCLI(t, addr, "framework", "teardown", "f1")
	if err != nil || got != "f1\n" {
		t.Errorf("framework teardown f1: printed %q, %v; want the ID", got, err)
	}
	if req := s.request("teardown"); !proto.Equal(req, &masterv1.TeardownFrameworkRequest{FrameworkId: "f1"}) {
		t.Errorf("teardown asked %v", req)
	}
	got, err = runCLI(t, addr, "agent", "mark-gone", "a9")
	if status.Code(err) != codes.NotFound || got != "" {
		t.Errorf("agent mark-gone a9: printed %q, %v; want the master's NotFound and nothing printed", got, err)
	}
	if req := s.request("mark-gone"); !proto.Equal(req, &masterv1.MarkAgentGoneRequest{AgentId: "a9"}) {
		t.Errorf("mark-gone asked %v", req)
	}
	if _, err := runCLI(t, addr, "framework", "teardown"); err == nil {
		t.Error("framework teardown without an ID was accepted")
	}
}

package master

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	masterv1 "github.com/gearboxd/gearbox/proto/gearbox/master/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func withPorts(id string, pms ...*typesv1.PortMapping) *masterv1.LaunchTaskRequest {
	return &masterv1.LaunchTaskRequest{TaskId: id, Image: "busybox",
		Container: &agentv1.LaunchContainerRequest{Image: "busybox", Network: "gearbox", PortMappings: pms}}
}

// Host ports are a resource: placement refuses a port outside an agent's
// ranges or held by another task (asked for by number, or picked by the
// agent and reported), and counts what is left to pick.
func TestPlacementHostPorts(t *testing.T) {
	_, c, conn := startMaster(t, nil)
	ctx := context.Background()
	a, err := connectAgent(t, conn, &masterv1.Register{Resources: &masterv1.Resources{Cpus: 8, MemoryBytes: 1 << 30,
		Ports: &typesv1.Ranges{Range: []*typesv1.Range{{Begin: 31000, End: 31002}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.LaunchTask(ctx, withPorts("web", &typesv1.PortMapping{HostPort: 31000, ContainerPort: 80})); err != nil {
		t.Fatal(err)
	}
	a.next(t)
	if _, err := c.LaunchTask(ctx, withPorts("picked", &typesv1.PortMapping{ContainerPort: 80})); err != nil {
		t.Fatal(err)
	}
	a.next(t)
	// The agent reports the port it picked, and the container's address.
	a.send(&masterv1.AgentMessage{Msg: &masterv1.AgentMessage_Update{Update: &masterv1.StatusUpdate{Uuid: "u1",
		Status: &masterv1.TaskStatus{TaskId: "picked", State: typesv1.TaskState_TASK_RUNNING, IpAddresses: []string{"10.89.0.7"},
			PortMappings: []*typesv1.PortMapping{{HostPort: 31001, ContainerPort: 80, Protocol: "tcp"}}}}}})
	a.next(t)
	if tk := waitTask(t, c, "picked", typesv1.TaskState_TASK_RUNNING); tk.IpAddresses[0] != "10.89.0.7" || tk.PortMappings[0].HostPort != 31001 {
		t.Errorf("task picked: %v", tk)
	}
	for _, tc := range []struct {
		req  *masterv1.LaunchTaskRequest
		code codes.Code
		msg  []string
	}{
		{withPorts("x", &typesv1.PortMapping{HostPort: 31000, ContainerPort: 80}), codes.ResourceExhausted, []string{"host port 31000 is taken by task web"}},
		{withPorts("x", &typesv1.PortMapping{HostPort: 31001, ContainerPort: 80}), codes.ResourceExhausted, []string{"host port 31001 is taken by task picked"}},
		{withPorts("x", &typesv1.PortMapping{HostPort: 8080, ContainerPort: 80}), codes.ResourceExhausted, []string{"8080", "[31000-31002]"}},
		{withPorts("x", &typesv1.PortMapping{ContainerPort: 80}, &typesv1.PortMapping{ContainerPort: 81}), codes.ResourceExhausted, []string{"2 ports to pick, 1 free"}},
		{withPorts("x", &typesv1.PortMapping{HostPort: 70000, ContainerPort: 80}), codes.InvalidArgument, []string{"70000"}},
		{withPorts("x", &typesv1.PortMapping{HostPort: 31002, ContainerPort: 80}, &typesv1.PortMapping{HostPort: 31002, ContainerPort: 81}), codes.InvalidArgument, []string{"twice"}},
	} {
		_, err := c.LaunchTask(ctx, tc.req)
		for _, m := range tc.msg {
			if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), m) {
				t.Errorf("launch %v: %v, want %s containing %q", tc.req.GetContainer().GetPortMappings(), err, tc.code, m)
			}
		}
	}
	// Naming the agent: the taken port is AlreadyExists.
	req := withPorts("x", &typesv1.PortMapping{HostPort: 31000, ContainerPort: 80})
	req.AgentId = a.id
	if _, err := c.LaunchTask(ctx, req); status.Code(err) != codes.AlreadyExists || !strings.Contains(err.Error(), "31000") {
		t.Errorf("launch on %s of a taken port: %v", a.id, err)
	}
	// The last free port still goes.
	if _, err := c.LaunchTask(ctx, withPorts("last", &typesv1.PortMapping{HostPort: 31002, ContainerPort: 80})); err != nil {
		t.Errorf("the last free port: %v", err)
	}
	st, err := c.GetState(ctx, &masterv1.GetStateRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Agents[0].Used.GetPorts().GetRange(); len(got) != 1 || got[0].Begin != 31000 || got[0].End != 31002 {
		t.Errorf("used ports %v", got)
	}
	// A registration with ports that are not ports is refused.
	if _, err := connectAgent(t, conn, &masterv1.Register{Resources: &masterv1.Resources{Cpus: 1,
		Ports: &typesv1.Ranges{Range: []*typesv1.Range{{Begin: 10, End: 70000}}}}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("registering ports [10-70000]: %v", err)
	}
}

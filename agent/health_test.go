package agent

import (
	"strings"
	"testing"

	"github.com/containerd/errdefs"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestResolveHealth(t *testing.T) {
	if c, err := resolveHealth(&agentv1.LaunchContainerRequest{}); c != nil || err != nil {
		t.Fatalf("no check: %v %v", c, err)
	}
	if c, err := resolveHealth(&agentv1.LaunchContainerRequest{NoHealthcheck: true}); c != nil || err != nil {
		t.Fatalf("no_healthcheck: %v %v", c, err)
	}
	c, err := resolveHealth(&agentv1.LaunchContainerRequest{HealthCheck: &typesv1.HealthCheck{Tcp: &typesv1.TCPCheck{Port: 80}}})
	if err != nil || c == nil || c.Port != 80 {
		t.Fatalf("tcp: %v %v", c, err)
	}
	for _, tc := range []struct {
		req   *agentv1.LaunchContainerRequest
		field string
	}{
		{&agentv1.LaunchContainerRequest{NoHealthcheck: true, HealthCheck: &typesv1.HealthCheck{Tcp: &typesv1.TCPCheck{Port: 80}}}, "no_healthcheck"},
		{&agentv1.LaunchContainerRequest{HealthCheck: &typesv1.HealthCheck{Tcp: &typesv1.TCPCheck{Port: 0}}}, "health_check.tcp.port"},
	} {
		_, err := resolveHealth(tc.req)
		if !errdefs.IsInvalidArgument(err) || !strings.HasPrefix(err.Error(), tc.field) {
			t.Errorf("%v: %v, want InvalidArgument naming %s", tc.req, err, tc.field)
		}
		if st := toStatus(err); !strings.Contains(st.Error(), "InvalidArgument") {
			t.Errorf("status %v", st)
		}
	}
}

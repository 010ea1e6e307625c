package main

import (
	"fmt"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/internal/errs"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// The agent's message says what happened; the CLI adds the next step for
// the command the person ran, and none for an error without ErrorInfo.
func TestExplainAddsHints(t *testing.T) {
	root := newRoot()
	agentErr := func(code codes.Code, msg, reason string, md map[string]string) error {
		return typesv1.WithErrorInfo(status.New(code, msg), reason, md).Err()
	}
	for _, c := range []struct {
		cmd  []string
		err  error
		want string
	}{
		{[]string{"run"}, agentErr(codes.NotFound, `image "docker.io/library/absent:1" is not present on this agent`, typesv1.ErrorReasonImageNotFound, map[string]string{"image": "absent:1"}),
			`image "docker.io/library/absent:1" is not present on this agent: pull it first (gearbox image pull absent:1) or import it (gearbox image import FILE)`},
		{[]string{"image", "rm"}, agentErr(codes.NotFound, `image "x" is not present on this agent`, typesv1.ErrorReasonImageNotFound, map[string]string{"image": "x"}),
			`image "x" is not present on this agent (gearbox image ls lists them)`},
		{[]string{"rm"}, agentErr(codes.FailedPrecondition, `container "web" is running`, typesv1.ErrorReasonContainerRunning, map[string]string{"container_id": "web"}),
			`container "web" is running: kill it first (gearbox kill web) or force the removal (gearbox rm -f web)`},
		{[]string{"debug"}, agentErr(codes.InvalidArgument, `image "x" has neither entrypoint nor cmd, and the debug session gives no command`, typesv1.ErrorReasonNoCommand, map[string]string{"image": "x", "container_id": "web"}),
			`image "x" has neither entrypoint nor cmd, and the debug session gives no command: give a command (gearbox debug web --image x -- CMD…)`},
		{[]string{"run"}, agentErr(codes.InvalidArgument, `image "x" has neither entrypoint nor cmd, and the launch gives no command`, typesv1.ErrorReasonNoCommand, map[string]string{"image": "x"}),
			`image "x" has neither entrypoint nor cmd, and the launch gives no command: give a command (gearbox run x CMD…)`},
		{[]string{"inspect"}, agentErr(codes.NotFound, `container "ghost" not found`, typesv1.ErrorReasonContainerNotFound, map[string]string{"container_id": "ghost"}),
			`container "ghost" not found (gearbox ps -a lists them)`},
		{[]string{"run"}, status.Error(codes.InvalidArgument, `unknown runtime "nope"`), `unknown runtime "nope"`},
		{[]string{"agent"}, fmt.Errorf("agent: %w", errs.New(errdefs.ErrUnavailable, "cannot reach containerd at /x.sock: refused (is it running? systemctl start containerd)")),
			"agent: cannot reach containerd at /x.sock: refused (is it running? systemctl start containerd); to try gearbox without a containerd of the host's, gearbox dev starts a private one"},
	} {
		cmd, _, err := root.Find(c.cmd)
		if err != nil {
			t.Fatal(err)
		}
		if got := explain(cmd, c.err); got != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.cmd, got, c.want)
		}
	}
}

package integration

import (
	"context"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Bad input gets the right code and a message that says what to do; after
// all of it the agent still serves and a running container still runs.
func TestBadInputIsRefusedAndDamagesNothing(t *testing.T) {
	if err := h.cliImport(h.noCmdTar); err != nil {
		t.Fatal(err)
	}
	bystander := launch(t, "bystander", "sleep", "300")
	launch(t, "taken", "sleep", "300")

	// The ErrorInfo reasons a client reads instead of the message.
	reasons := map[string]string{
		"ID taken":             typesv1.ErrorReasonContainerExists,
		"image not present":    typesv1.ErrorReasonImageNotFound,
		"no command":           typesv1.ErrorReasonNoCommand,
		"kill unknown":         typesv1.ErrorReasonContainerNotFound,
		"remove unknown":       typesv1.ErrorReasonContainerNotFound,
		"remove running":       typesv1.ErrorReasonContainerRunning,
		"remove image unknown": typesv1.ErrorReasonImageNotFound,
		"remove image in use":  typesv1.ErrorReasonImageInUse,
		"logs unknown":         typesv1.ErrorReasonContainerNotFound,
	}
	launchReq := func(mod func(*agentv1.LaunchContainerRequest)) *agentv1.LaunchContainerRequest {
		r := &agentv1.LaunchContainerRequest{Image: testImage, Cmd: &agentv1.StringList{Values: []string{"true"}}}
		mod(r)
		return r
	}
	for _, tc := range []struct {
		name string
		req  *agentv1.LaunchContainerRequest
		code codes.Code
		msg  string
	}{
		{"ID too long", launchReq(func(r *agentv1.LaunchContainerRequest) { r.ContainerId = strings.Repeat("a", 65) }), codes.InvalidArgument, "limit is 64"},
		{"ID with slash", launchReq(func(r *agentv1.LaunchContainerRequest) { r.ContainerId = "a/b" }), codes.InvalidArgument, "a/b"},
		{"ID with ..", launchReq(func(r *agentv1.LaunchContainerRequest) { r.ContainerId = "../../etc" }), codes.InvalidArgument, ".."},
		{"ID taken", launchReq(func(r *agentv1.LaunchContainerRequest) { r.ContainerId = "taken" }), codes.AlreadyExists, "already exists"},
		{"malformed image", launchReq(func(r *agentv1.LaunchContainerRequest) { r.Image = "UPPER CASE::bad" }), codes.InvalidArgument, "malformed"},
		{"no image", launchReq(func(r *agentv1.LaunchContainerRequest) { r.Image = "" }), codes.InvalidArgument, "no image"},
		{"image not present", launchReq(func(r *agentv1.LaunchContainerRequest) {
			r.Image, r.PullPolicy = "localhost/absent:1", typesv1.PullPolicy_PULL_NEVER
		}), codes.NotFound, "not present on this agent and the pull policy is never"},
		{"unknown runtime", launchReq(func(r *agentv1.LaunchContainerRequest) { r.Runtime = "nope" }), codes.InvalidArgument, "runc"},
		{"malformed env", launchReq(func(r *agentv1.LaunchContainerRequest) { r.Env = []string{"NOEQUALS"} }), codes.InvalidArgument, "KEY=VALUE"},
		{"env with empty key", launchReq(func(r *agentv1.LaunchContainerRequest) { r.Env = []string{"=v"} }), codes.InvalidArgument, "KEY=VALUE"},
		{"no command", launchReq(func(r *agentv1.LaunchContainerRequest) { r.Image = "localhost/nocmd:1"; r.Cmd = nil }), codes.InvalidArgument, "neither entrypoint nor cmd"},
	} {
		_, err := h.client.LaunchContainer(ctxT(t), tc.req)
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		t.Run(tc.name, func(t *testing.T) { wantCode(t, err, tc.code, tc.msg); wantReason(t, err, reasons[tc.name]) })
	}

	ctx := ctxT(t)
	for _, tc := range []struct {
		name string
		call func(context.Context) error
		code codes.Code
		msg  string
	}{
		{"wait empty ID", func(ctx context.Context) error {
			_, err := h.client.WaitContainer(ctx, &agentv1.WaitContainerRequest{})
			return err
		}, codes.InvalidArgument, "empty"},
		{"kill unknown", func(ctx context.Context) error {
			_, err := h.client.KillContainer(ctx, &agentv1.KillContainerRequest{ContainerId: "ghost"})
			return err
		}, codes.NotFound, "ghost"},
		{"kill unknown signal", func(ctx context.Context) error {
			_, err := h.client.KillContainer(ctx, &agentv1.KillContainerRequest{ContainerId: "bystander", Signal: "SIGNOPE"})
			return err
		}, codes.InvalidArgument, "unknown signal"},
		{"remove unknown", func(ctx context.Context) error {
			_, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: "ghost"})
			return err
		}, codes.NotFound, "ghost"},
		{"remove running", func(ctx context.Context) error {
			_, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: "bystander"})
			return err
		}, codes.FailedPrecondition, "is running"},
		{"remove image unknown", func(ctx context.Context) error {
			_, err := h.client.RemoveImage(ctx, &agentv1.RemoveImageRequest{Image: "localhost/absent:1"})
			return err
		}, codes.NotFound, "not present"},
		{"remove image in use", func(ctx context.Context) error {
			_, err := h.client.RemoveImage(ctx, &agentv1.RemoveImageRequest{Image: testImage})
			return err
		}, codes.FailedPrecondition, "bystander"},
		{"logs unknown", func(ctx context.Context) error {
			st, err := h.client.ReadLogs(ctx, &agentv1.ReadLogsRequest{ContainerId: "ghost"})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}, codes.NotFound, "ghost"},
		{"empty import", func(ctx context.Context) error {
			st, err := h.client.ImportImage(ctx)
			if err == nil {
				_, err = st.CloseAndRecv()
			}
			return err
		}, codes.InvalidArgument, "empty import"},
		{"import options twice", func(ctx context.Context) error {
			st, err := h.client.ImportImage(ctx)
			if err != nil {
				return err
			}
			opt := &agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Options{Options: &agentv1.ImportOptions{}}}
			st.Send(opt)
			st.Send(opt)
			_, err = st.CloseAndRecv()
			return err
		}, codes.InvalidArgument, "only data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx)
			wantCode(t, err, tc.code, tc.msg)
			wantReason(t, err, reasons[tc.name])
		})
	}

	// The API says what happened; the CLI adds what to type next.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--pull", "never", "localhost/absent:1"}, `is not present on this agent and the pull policy is never (--pull never): pull it first (gearbox image pull localhost/absent:1)`},
		{[]string{"rm", "bystander"}, `container "bystander" is running: kill it first (gearbox kill bystander) or force the removal (gearbox rm -f bystander)`},
		{[]string{"run", "--name", "taken", testImage, "true"}, `container "taken" already exists: choose another name or remove it (gearbox rm taken)`},
		{[]string{"image", "rm", "localhost/absent:1"}, `is not present on this agent (gearbox image ls lists them)`},
	} {
		if r := h.cli(c.args...); r.code != 125 || !strings.Contains(r.stderr, c.want) {
			t.Errorf("gearbox %s: exit %d, stderr %q; want 125 and %q", strings.Join(c.args, " "), r.code, r.stderr, c.want)
		}
	}

	if r, err := h.client.GetHealth(ctxT(t), &agentv1.GetHealthRequest{}); err != nil || !r.Healthy {
		t.Fatalf("agent unhealthy after bad input: %v %v", r, err)
	}
	if err := syscall.Kill(int(bystander.Pid), 0); err != nil {
		t.Fatalf("running container damaged: %v", err)
	}
	if c := inspect(t, "bystander"); c.State.String() != "TASK_RUNNING" {
		t.Fatalf("bystander is %v", c.State)
	}
}

// wantReason checks the ErrorInfo reason of an agent's error ("" for none).
func wantReason(t *testing.T, err error, reason string) {
	t.Helper()
	if got := typesv1.ErrorReason(err); got != reason {
		t.Errorf("ErrorInfo reason %q, want %q (%v)", got, reason, err)
	}
}

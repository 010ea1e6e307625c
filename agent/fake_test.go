package agent

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"

	"github.com/containerd/errdefs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/isolators"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// fakeContainerizer stands in for containerd where the agent's own logic
// is under test (admission, session framing, status updates): it keeps
// containers in a map and runs execs as goroutines. What containerd does
// is tested against a real one, in integration/.
type fakeContainerizer struct {
	mu         sync.Mutex
	containers map[containerizer.ContainerID]containerizer.Container
	// checkErr is what CheckResources answers.
	checkErr error
	// launching hears each launch as it starts; hold, when set, keeps it
	// from returning until closed.
	launching chan containerizer.LaunchConfig
	hold      chan struct{}
	launchErr error
	launches  int
	kills     []containerizer.ContainerID
	execs     []*fakeExec
	version   string
}

var _ containerizer.Containerizer = (*fakeContainerizer)(nil)

func newFake() *fakeContainerizer {
	return &fakeContainerizer{containers: map[containerizer.ContainerID]containerizer.Container{}, version: "fake-1"}
}

func (f *fakeContainerizer) CheckResources(r isolators.Resources, update bool) error {
	return f.checkErr
}

func (f *fakeContainerizer) Launch(ctx context.Context, cfg containerizer.LaunchConfig) (containerizer.Container, error) {
	f.mu.Lock()
	f.launches++
	launching, hold, lerr := f.launching, f.hold, f.launchErr
	f.mu.Unlock()
	if launching != nil {
		select {
		case launching <- cfg:
		case <-ctx.Done():
			return containerizer.Container{}, ctx.Err()
		}
	}
	if hold != nil {
		select {
		case <-hold:
		case <-ctx.Done():
			return containerizer.Container{}, ctx.Err()
		}
	}
	if lerr != nil {
		return containerizer.Container{}, lerr
	}
	c := containerizer.Container{ID: cfg.ID, Image: cfg.Image, State: containerizer.TaskRunning, Labels: cfg.Labels, Resources: cfg.Resources, Pid: 42}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.containers[cfg.ID]; ok {
		return containerizer.Container{}, errs.New(errdefs.ErrAlreadyExists, "container %q exists", cfg.ID)
	}
	f.containers[cfg.ID] = c
	return c, nil
}

func (f *fakeContainerizer) launchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.launches
}

func (f *fakeContainerizer) put(c containerizer.Container) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[c.ID] = c
}

func (f *fakeContainerizer) Get(ctx context.Context, id containerizer.ContainerID) (containerizer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, errs.New(errdefs.ErrNotFound, "container %q not found", id)
	}
	return c, nil
}

func (f *fakeContainerizer) Containers(ctx context.Context) ([]containerizer.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []containerizer.Container
	for _, c := range f.containers {
		out = append(out, c)
	}
	return out, nil
}

func (f *fakeContainerizer) Wait(ctx context.Context, id containerizer.ContainerID) (containerizer.Container, error) {
	return f.Get(ctx, id)
}

func (f *fakeContainerizer) Kill(ctx context.Context, id containerizer.ContainerID, req containerizer.KillRequest) error {
	if _, err := f.Get(ctx, id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.kills = append(f.kills, id)
	return nil
}

func (f *fakeContainerizer) Destroy(ctx context.Context, id containerizer.ContainerID, force bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, id)
	return nil
}

func (f *fakeContainerizer) Logs(ctx context.Context, id containerizer.ContainerID, req containerizer.LogsRequest, fn func(containerizer.LogChunk) error) error {
	return errs.New(errdefs.ErrNotImplemented, "the fake keeps no logs")
}

func (f *fakeContainerizer) Update(ctx context.Context, id containerizer.ContainerID, r isolators.Resources) (containerizer.Container, error) {
	return containerizer.Container{}, errs.New(errdefs.ErrNotImplemented, "the fake does not update")
}

func (f *fakeContainerizer) Usage(ctx context.Context, id containerizer.ContainerID) (isolators.Usage, error) {
	return isolators.Usage{}, errs.New(errdefs.ErrNotImplemented, "the fake has no usage")
}

func (f *fakeContainerizer) Pull(ctx context.Context, ref string, auth *containerizer.RegistryAuth, progress func(containerizer.PullProgress)) (containerizer.Image, error) {
	return containerizer.Image{}, errs.New(errdefs.ErrNotImplemented, "the fake has no registry")
}

func (f *fakeContainerizer) Import(ctx context.Context, r io.Reader, name string) ([]containerizer.Image, error) {
	return nil, errs.New(errdefs.ErrNotImplemented, "the fake has no images")
}

func (f *fakeContainerizer) Images(ctx context.Context) ([]containerizer.Image, error) {
	return nil, nil
}

func (f *fakeContainerizer) RemoveImage(ctx context.Context, ref string, force bool) error {
	return errs.New(errdefs.ErrNotFound, "image %q not found", ref)
}

// Exec starts a fake process: it copies its stdin to its stdout and, once
// stdin ends, exits with len(cfg.Args).
func (f *fakeContainerizer) Tag(ctx context.Context, src, dst string) (containerizer.Image, error) {
	return containerizer.Image{Name: dst}, nil
}

func (f *fakeContainerizer) Prune(ctx context.Context, req containerizer.PruneRequest) (containerizer.PruneResult, error) {
	return containerizer.PruneResult{}, nil
}

func (f *fakeContainerizer) ImageFS(ctx context.Context) (string, error) { return os.TempDir(), nil }

func (f *fakeContainerizer) Exec(ctx context.Context, id containerizer.ContainerID, cfg containerizer.ExecConfig, eio containerizer.ExecIO) (containerizer.Exec, error) {
	if _, err := f.Get(ctx, id); err != nil {
		return nil, err
	}
	e := &fakeExec{cfg: cfg, resized: make(chan [2]uint32, 8), done: make(chan struct{}), closed: make(chan struct{})}
	go func() {
		defer close(e.done)
		if eio.Stdin != nil {
			io.Copy(eio.Stdout, eio.Stdin)
		}
	}()
	f.mu.Lock()
	f.execs = append(f.execs, e)
	f.mu.Unlock()
	return e, nil
}

func (f *fakeContainerizer) AttachInput(ctx context.Context, id containerizer.ContainerID) (containerizer.Attachment, error) {
	return nil, errs.New(errdefs.ErrNotImplemented, "the fake has no stdin")
}

func (f *fakeContainerizer) LaunchNested(ctx context.Context, cfg containerizer.NestedConfig) (containerizer.NestedContainer, error) {
	return containerizer.NestedContainer{}, errs.New(errdefs.ErrNotImplemented, "the fake has no nested containers")
}

func (f *fakeContainerizer) WaitNested(ctx context.Context, id containerizer.ContainerID) (containerizer.NestedContainer, error) {
	return containerizer.NestedContainer{}, errs.New(errdefs.ErrNotFound, "nested container %q not found", id)
}

func (f *fakeContainerizer) KillNested(ctx context.Context, id containerizer.ContainerID, sig syscall.Signal) error {
	return errs.New(errdefs.ErrNotFound, "nested container %q not found", id)
}

func (f *fakeContainerizer) RemoveNested(ctx context.Context, id containerizer.ContainerID, force bool) error {
	return errs.New(errdefs.ErrNotFound, "nested container %q not found", id)
}

func (f *fakeContainerizer) Runtimes() []containerizer.Runtime {
	return []containerizer.Runtime{{Name: "runc", Type: "io.containerd.runc.v2", Available: true}}
}

func (f *fakeContainerizer) DefaultRuntime() string { return "runc" }

func (f *fakeContainerizer) Version(ctx context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.version == "" {
		return "", errs.New(errdefs.ErrUnavailable, "the fake containerd does not answer")
	}
	return f.version, nil
}

func (f *fakeContainerizer) Close() error { return nil }

type fakeExec struct {
	cfg     containerizer.ExecConfig
	resized chan [2]uint32
	done    chan struct{}

	closeOnce sync.Once
	closed    chan struct{}
}

func (e *fakeExec) Resize(ctx context.Context, w, h uint32) error {
	e.resized <- [2]uint32{w, h}
	return nil
}

func (e *fakeExec) Wait(ctx context.Context) (int32, error) {
	select {
	case <-e.done:
		return int32(len(e.cfg.Args)), nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (e *fakeExec) Close() error {
	e.closeOnce.Do(func() { close(e.closed) })
	return nil
}

// testAuditor keeps a session's end records.
type testAuditor struct{ ends chan auditRecord }

func (a *testAuditor) audit(r auditRecord) error { return nil }

func (a *testAuditor) beginAudit(r auditRecord) (auditRecord, error) {
	r.Event = auditStart
	return r, nil
}

func (a *testAuditor) endAudit(r auditRecord, cause error) {
	r.Event = auditEnd
	if cause != nil {
		r.Error = cause.Error()
	}
	a.ends <- r
}

// testServer is the Agent API's server over a fake containerizer, with a
// ledger of total, served in-process.
type testServer struct {
	fake   *fakeContainerizer
	srv    *server
	client agentv1.AgentClient
	audits chan auditRecord
}

func newTestServer(t *testing.T, total ResourceSet) *testServer {
	t.Helper()
	fake := newFake()
	ts := &testServer{fake: fake, audits: make(chan auditRecord, 16)}
	authz, err := newAuthorizer(Roles{})
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = &server{
		containers: fake, images: fake, execs: fake, host: fake,
		adm:   &admission{cz: fake, ledger: &ledger{total: total}},
		gate:  newGate(),
		authz: authz, sessions: &sessions{max: 2},
		aud:  &testAuditor{ends: ts.audits},
		node: func(r *agentv1.GetStateResponse) { r.AgentId = "test-agent" },
		log:  slog.New(slog.DiscardHandler),
	}
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer(grpc.ForceServerCodecV2(sessionCodec{})) // as Run's
	agentv1.RegisterAgentServer(gs, ts.srv)
	served := make(chan struct{})
	go func() { defer close(served); gs.Serve(lis) }()
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		ts.srv.gate.stop()
		gs.Stop()
		<-served
		ts.srv.sessions.readers.Wait()
	})
	ts.client = agentv1.NewAgentClient(conn)
	return ts
}

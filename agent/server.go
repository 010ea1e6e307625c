package agent

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/internal/launchspec"
	"github.com/gearboxd/gearbox/internal/version"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// server implements gearbox.agent.v1.Agent over the containerizer's
// contracts. It checks what comes from outside, converts, and turns errors
// into gRPC statuses. It holds what it uses, not the Agent, so that tests
// can build one over a fake containerizer.
type server struct {
	agentv1.UnimplementedAgentServer
	containers containerizer.Containers
	images     containerizer.Images
	execs      containerizer.Sessions
	host       containerizer.Host
	adm        *admission
	gate       *gate
	authz      *authorizer
	sessions   *sessions
	aud        auditor
	// node fills the agent's own part of GetState: host, IDs, master.
	node func(*agentv1.GetStateResponse)
	log  *slog.Logger
	// imageMinAge is image_gc.min_age: PruneImages without all keeps
	// images used more recently.
	imageMinAge time.Duration
	// gcDue says when the sandbox GC removes a container (nil: never).
	gcDue func(containerizer.Container) time.Time

	// health says a container's health (nil: none are checked).
	health *health
}

// auditor keeps the audit log; the Agent does (session.go).
type auditor interface {
	audit(r auditRecord) error
	beginAudit(r auditRecord) (auditRecord, error)
	endAudit(r auditRecord, cause error)
}

// apiServer wires the Agent API's handlers to the agent's parts.
func (a *Agent) apiServer() *server {
	return &server{
		containers: a.cz, images: a.cz, execs: a.cz, host: a.cz,
		adm: a.adm, gate: a.gate, authz: a.authz, sessions: &a.sessions, aud: a,
		node: a.nodeState, log: a.log,
		imageMinAge: a.cfg.ImageGC.MinAge, gcDue: a.gc.dueAt, health: a.adm.health,
	}
}

// nodeState fills what the agent itself knows of GetState.
func (a *Agent) nodeState(r *agentv1.GetStateResponse) {
	r.Hostname, _ = os.Hostname()
	r.Namespace, r.WorkDir = a.cfg.Namespace, a.cfg.WorkDir
	r.StartedAt, r.AgentId = timestamppb.New(a.startedAt), a.id()
	if a.mc != nil {
		a.mc.state(r)
	}
	r.Attributes = a.attrs
	r.ResourceLabels = resourceLabels()
}

func setToProto(r ResourceSet) *agentv1.ResourceSet {
	return &agentv1.ResourceSet{Cpus: r.CPUs, Memory: r.Memory, Disk: r.Disk, Ports: portsToProto(r.Ports)}
}

func checkID(id string) error {
	if err := ids.Validate(id); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return nil
}

func (s *server) GetHealth(ctx context.Context, _ *agentv1.GetHealthRequest) (*agentv1.GetHealthResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.host.Version(ctx); err != nil {
		return &agentv1.GetHealthResponse{Healthy: false, Message: err.Error()}, nil
	}
	return &agentv1.GetHealthResponse{Healthy: true}, nil
}

func (s *server) GetVersion(ctx context.Context, _ *agentv1.GetVersionRequest) (*agentv1.GetVersionResponse, error) {
	r := &agentv1.GetVersionResponse{Version: version.Version, GitCommit: version.GitCommit, GoVersion: runtime.Version()}
	if v, err := s.host.Version(ctx); err == nil {
		r.ContainerdVersion = v
	}
	return r, nil
}

func (s *server) GetState(ctx context.Context, _ *agentv1.GetStateRequest) (*agentv1.GetStateResponse, error) {
	r := &agentv1.GetStateResponse{DefaultRuntime: s.host.DefaultRuntime()}
	s.node(r)
	for _, rt := range s.host.Runtimes() {
		r.Runtimes = append(r.Runtimes, &agentv1.Runtime{Name: rt.Name, Type: rt.Type, Binary: rt.Binary, Available: rt.Available, UnavailableReason: rt.UnavailableReason})
	}
	cs, err := s.containers.Containers(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	for _, c := range cs {
		r.ContainersTotal++
		if c.State.Running() {
			r.ContainersRunning++
		}
	}
	total, alloc := s.adm.ledger.usage(cs)
	r.Total, r.Allocated, r.Free = setToProto(total), setToProto(alloc), setToProto(total.sub(alloc))
	return r, nil
}

func (s *server) GetContainers(ctx context.Context, req *agentv1.GetContainersRequest) (*agentv1.GetContainersResponse, error) {
	cs, err := s.containers.Containers(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	r := &agentv1.GetContainersResponse{}
	for _, c := range cs {
		if req.GetAll() || !c.State.Terminal() {
			pc := s.containerProto(c)
			if s.gcDue != nil {
				if due := s.gcDue(c); !due.IsZero() {
					pc.GcAt = timestamppb.New(due)
				}
			}
			r.Containers = append(r.Containers, pc)
		}
	}
	return r, nil
}

func (s *server) LaunchContainer(ctx context.Context, req *agentv1.LaunchContainerRequest) (*agentv1.LaunchContainerResponse, error) {
	if id := req.GetContainerId(); id != "" {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	if err := s.gate.admit(); err != nil {
		return nil, err
	}
	if _, ok := req.GetLabels()[LabelTask]; ok {
		return nil, status.Errorf(codes.InvalidArgument, "label %s is reserved for tasks the master launches: use gearbox task launch, or another label", LabelTask)
	}
	if err := launchspec.Validate(req); err != nil {
		return nil, toStatus(err)
	}
	if err := checkPortNumbers(req.GetPortMappings()); err != nil {
		return nil, toStatus(err)
	}
	cfg := launchFromProto(req)
	if cfg.ID == "" {
		cfg.ID = containerizer.ContainerID(ids.New())
	}
	c, err := s.adm.launchChecked(ctx, cfg, req)
	if err != nil {
		s.log.Info("launch refused or failed", "container_id", req.GetContainerId(), "image", req.GetImage(), "err", err)
		return nil, toStatus(err)
	}
	s.log.Info("container launched", "container_id", c.ID, "image", c.Image, "pid", c.Pid)
	return &agentv1.LaunchContainerResponse{Container: s.containerProto(c)}, nil
}

// admission admits launches against the agent's resources.
type admission struct {
	cz     containerizer.Containers
	ledger *ledger
	// health runs the launched containers' health checks (nil in tests
	// that build an admission over a fake).
	health *health
	// defaultNetwork is the network of a launch that names none.
	defaultNetwork string
}

// launch admits a launch against the agent's resources and runs it: the
// one path of LaunchContainer and of tasks from the master.
func (ad *admission) launch(ctx context.Context, cfg containerizer.LaunchConfig) (containerizer.Container, error) {
	// Values no isolator could honour are refused before admission.
	if err := ad.cz.CheckResources(cfg.Resources, false); err != nil {
		return containerizer.Container{}, err
	}
	cs, err := ad.cz.Containers(ctx)
	if err != nil {
		return containerizer.Container{}, err
	}
	if cfg.Network.Name == "" {
		cfg.Network.Name = ad.defaultNetwork
	}
	if err := checkMappings(cfg.Network); err != nil {
		return containerizer.Container{}, err
	}
	release, err := ad.ledger.reserveNet(string(cfg.ID), cfg.Resources, &cfg.Network, cs)
	if err != nil {
		return containerizer.Container{}, err
	}
	defer release()
	return ad.cz.Launch(ctx, cfg)
}

func (s *server) WaitContainer(ctx context.Context, req *agentv1.WaitContainerRequest) (*agentv1.WaitContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	ctx, done := s.gate.longCall(ctx)
	defer done()
	c, err := s.containers.Wait(ctx, containerizer.ContainerID(req.GetContainerId()))
	if err != nil {
		return nil, s.gate.stoppingErr(err)
	}
	return &agentv1.WaitContainerResponse{Container: s.containerProto(c)}, nil
}

// ParseSignal reads a signal name (SIGTERM, TERM, term) or number.
func ParseSignal(s string) (syscall.Signal, error) {
	if s == "" {
		return syscall.SIGKILL, nil
	}
	var n int
	if _, err := fmt.Sscanf(s, "%d", &n); err == nil && fmt.Sprint(n) == s {
		if n <= 0 || n > 64 {
			return 0, errs.New(errdefs.ErrInvalidArgument, "signal %d is out of range 1-64", n)
		}
		return syscall.Signal(n), nil
	}
	name := s
	if len(name) < 3 || (name[:3] != "SIG" && name[:3] != "sig") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(upper(name)); sig != 0 {
		return sig, nil
	}
	return 0, errs.New(errdefs.ErrInvalidArgument, "unknown signal %q (use a name such as TERM or a number)", s)
}

func upper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func (s *server) KillContainer(ctx context.Context, req *agentv1.KillContainerRequest) (*agentv1.KillContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	sig, err := ParseSignal(req.GetSignal())
	if err != nil {
		return nil, toStatus(err)
	}
	kr := containerizer.KillRequest{Signal: sig}
	if req.GetSignal() == "" && req.GetGracePeriod() == nil {
		kr.Signal = 0 // none named: the container's kill policy
	}
	if g := req.GetGracePeriod(); g != nil {
		if err := g.CheckValid(); err != nil || g.AsDuration() < 0 {
			return nil, status.Errorf(codes.InvalidArgument, "grace_period must be a non-negative duration")
		}
		kr.Grace = g.AsDuration()
	}
	if err := s.containers.Kill(ctx, containerizer.ContainerID(req.GetContainerId()), kr); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("container signalled", "container_id", req.GetContainerId(), "signal", unix.SignalName(sig))
	return &agentv1.KillContainerResponse{}, nil
}

func (s *server) RemoveContainer(ctx context.Context, req *agentv1.RemoveContainerRequest) (*agentv1.RemoveContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	if err := s.containers.Destroy(ctx, containerizer.ContainerID(req.GetContainerId()), req.GetForce()); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("container removed", "container_id", req.GetContainerId())
	return &agentv1.RemoveContainerResponse{}, nil
}

func (s *server) UpdateContainer(ctx context.Context, req *agentv1.UpdateContainerRequest) (*agentv1.UpdateContainerResponse, error) {
	if err := checkID(req.GetContainerId()); err != nil {
		return nil, err
	}
	if req.GetResources() == nil {
		return nil, status.Error(codes.InvalidArgument, "no resources given: set cpus, memory, memory_soft or pids")
	}
	c, err := s.containers.Update(ctx, containerizer.ContainerID(req.GetContainerId()), resourcesFromProto(req.GetResources()))
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("container updated", "container_id", c.ID, "cpus", c.Resources.CPUs, "memory", c.Resources.Memory)
	return &agentv1.UpdateContainerResponse{Container: s.containerProto(c)}, nil
}

func (s *server) GetContainerUsage(ctx context.Context, req *agentv1.GetContainerUsageRequest) (*agentv1.GetContainerUsageResponse, error) {
	idList := req.GetContainerIds()
	all := len(idList) == 0
	if all {
		cs, err := s.containers.Containers(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		for _, c := range cs {
			if c.State.Running() {
				idList = append(idList, string(c.ID))
			}
		}
	}
	for _, id := range idList {
		if err := checkID(id); err != nil {
			return nil, err
		}
	}
	// Reading cgroup files is syscall-bound: a few workers at once.
	usages := make([]*agentv1.ContainerUsage, len(idList))
	errList := make([]error, len(idList))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for i, id := range idList {
		g.Go(func() error {
			u, err := s.containers.Usage(gctx, containerizer.ContainerID(id))
			if err != nil {
				errList[i] = err
				return nil
			}
			c, _ := s.containers.Get(gctx, containerizer.ContainerID(id))
			usages[i] = usageToProto(containerizer.ContainerID(id), u, c.Resources, time.Now())
			return nil
		})
	}
	g.Wait()
	resp := &agentv1.GetContainerUsageResponse{}
	for i, u := range usages {
		if errList[i] != nil {
			if all {
				continue // it ended meanwhile
			}
			return nil, toStatus(errList[i])
		}
		resp.Usages = append(resp.Usages, u)
	}
	return resp, nil
}

func (s *server) ReadLogs(req *agentv1.ReadLogsRequest, stream agentv1.Agent_ReadLogsServer) error {
	if err := checkID(req.GetContainerId()); err != nil {
		return err
	}
	ctx, done := s.gate.longCall(stream.Context())
	defer done()
	lr := containerizer.LogsRequest{Streams: streamsFromProto(req.GetStreams()), Follow: req.GetFollow(), Cursor: req.GetCursor(), Tail: -1}
	if req.TailLines != nil {
		if req.GetTailLines() < 0 {
			return status.Error(codes.InvalidArgument, "tail_lines must not be negative")
		}
		lr.Tail = int(req.GetTailLines())
	}
	if req.Since != nil {
		if err := req.Since.CheckValid(); err != nil {
			return status.Errorf(codes.InvalidArgument, "since: %v", err)
		}
		lr.Since = req.Since.AsTime()
	}
	err := s.containers.Logs(ctx, containerizer.ContainerID(req.GetContainerId()), lr,
		func(ch containerizer.LogChunk) error {
			st := agentv1.Stream_STREAM_STDOUT
			if ch.Stream == containerizer.Stderr {
				st = agentv1.Stream_STREAM_STDERR
			}
			return stream.Send(&agentv1.ReadLogsResponse{Stream: st, Data: ch.Data, Cursor: ch.Cursor})
		})
	return s.gate.stoppingErr(err)
}

func (s *server) PullImage(req *agentv1.PullImageRequest, stream agentv1.Agent_PullImageServer) error {
	if err := s.gate.admit(); err != nil {
		return err
	}
	auth := authFromProto(req.GetAuth())
	var sendErr error
	img, err := s.images.Pull(stream.Context(), req.GetImage(), auth, func(p containerizer.PullProgress) {
		if sendErr != nil {
			return
		}
		sendErr = stream.Send(&agentv1.PullImageResponse{Event: &agentv1.PullImageResponse_Progress{Progress: &agentv1.LayerProgress{
			Digest: p.Digest, MediaType: p.MediaType, Status: p.Status, Offset: p.Offset, Total: p.Total,
		}}})
	})
	if err != nil {
		s.log.Info("pull failed", "image", req.GetImage(), "err", err)
		return toStatus(err)
	}
	s.log.Info("image pulled", "image", img.Name, "digest", img.Digest)
	return stream.Send(&agentv1.PullImageResponse{Event: &agentv1.PullImageResponse_Done{Done: imageToProto(img)}})
}

// importReader turns the ImportImage stream into a reader.
type importReader struct {
	stream agentv1.Agent_ImportImageServer
	buf    []byte
}

func (r *importReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		m, err := r.stream.Recv()
		if err != nil {
			return 0, err // io.EOF when the client is done
		}
		if _, ok := m.Part.(*agentv1.ImportImageRequest_Data); !ok {
			return 0, errs.New(errdefs.ErrInvalidArgument, "only data may follow the first message of an import")
		}
		r.buf = m.GetData()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

func (s *server) ImportImage(stream agentv1.Agent_ImportImageServer) error {
	if err := s.gate.admit(); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err == io.EOF {
		return status.Error(codes.InvalidArgument, "empty import: send the options, then the archive's bytes")
	}
	if err != nil {
		return err
	}
	r := &importReader{stream: stream}
	var name string
	switch p := first.Part.(type) {
	case *agentv1.ImportImageRequest_Options:
		name = p.Options.GetName()
	case *agentv1.ImportImageRequest_Data:
		r.buf = p.Data
	}
	imgs, err := s.images.Import(stream.Context(), r, name)
	if err != nil {
		s.log.Info("import failed", "err", err)
		return toStatus(err)
	}
	resp := &agentv1.ImportImageResponse{}
	for _, im := range imgs {
		s.log.Info("image imported", "image", im.Name, "digest", im.Digest)
		resp.Images = append(resp.Images, imageToProto(im))
	}
	return stream.SendAndClose(resp)
}

func (s *server) ListImages(ctx context.Context, _ *agentv1.ListImagesRequest) (*agentv1.ListImagesResponse, error) {
	imgs, err := s.images.Images(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	r := &agentv1.ListImagesResponse{}
	for _, im := range imgs {
		r.Images = append(r.Images, imageToProto(im))
	}
	return r, nil
}

func (s *server) RemoveImage(ctx context.Context, req *agentv1.RemoveImageRequest) (*agentv1.RemoveImageResponse, error) {
	if err := s.images.RemoveImage(ctx, req.GetImage(), req.GetForce()); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("image removed", "image", req.GetImage())
	return &agentv1.RemoveImageResponse{}, nil
}

func (s *server) TagImage(ctx context.Context, req *agentv1.TagImageRequest) (*agentv1.TagImageResponse, error) {
	if req.GetSource() == "" || req.GetTarget() == "" {
		return nil, status.Error(codes.InvalidArgument, "source and target: give the image to tag and its new name (gearbox image tag SRC DST)")
	}
	im, err := s.images.Tag(ctx, req.GetSource(), req.GetTarget())
	if err != nil {
		return nil, toStatus(err)
	}
	return &agentv1.TagImageResponse{Image: imageToProto(im)}, nil
}

func (s *server) PruneImages(ctx context.Context, req *agentv1.PruneImagesRequest) (*agentv1.PruneImagesResponse, error) {
	pr := containerizer.PruneRequest{Keep: req.GetExcludedImages()}
	if !req.GetAll() {
		pr.UnusedFor = s.imageMinAge
	}
	res, err := s.images.Prune(ctx, pr)
	resp := &agentv1.PruneImagesResponse{ReclaimedBytes: res.ReclaimedBytes}
	for _, im := range res.Removed {
		resp.Removed = append(resp.Removed, imageToProto(im))
	}
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("images pruned", "images", len(res.Removed), "bytes", res.ReclaimedBytes)
	return resp, nil
}

// containerProto is a container as the Agent API shows it, its health
// included.
func (s *server) containerProto(c containerizer.Container) *agentv1.Container {
	p := containerToProto(c)
	if s.health != nil {
		if st, ok := s.health.status(c.ID); ok {
			healthToProto(p, st)
		}
	}
	return p
}

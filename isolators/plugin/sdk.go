package plugin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/isolators"
	isolatorv1 "github.com/gearboxd/gearbox/proto/gearbox/isolator/v1"
)

// Base gives a plugin no-op steps; embed it and override what you need.
type Base struct{}

func (Base) Recover(context.Context, []isolators.Container) error { return nil }
func (Base) Prepare(context.Context, isolators.Container) (Prepared, error) {
	return Prepared{}, nil
}
func (Base) Isolate(context.Context, isolators.Container, int) error { return nil }
func (Base) Watch(context.Context, isolators.Container) (*isolators.Limitation, error) {
	return nil, nil
}
func (Base) Update(context.Context, isolators.Container, isolators.Resources) error { return nil }
func (Base) Usage(context.Context, isolators.Container, *isolators.Usage) error     { return nil }
func (Base) Status(context.Context, isolators.Container) (map[string]string, error) {
	return nil, nil
}
func (Base) Cleanup(context.Context, isolators.Container) error { return nil }

// Serve serves p on a unix socket (mode 0600) until ctx ends.
func Serve(ctx context.Context, socket string, p Plugin) error {
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		lis.Close()
		return err
	}
	s := grpc.NewServer()
	isolatorv1.RegisterIsolatorServer(s, &server{p: p})
	stop := context.AfterFunc(ctx, s.GracefulStop)
	defer stop()
	if err := s.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

type server struct {
	isolatorv1.UnimplementedIsolatorServer
	p Plugin
}

func fail(err error) error {
	if err == nil {
		return nil
	}
	return status.Error(codes.Unknown, err.Error())
}

func (s *server) Recover(ctx context.Context, r *isolatorv1.RecoverRequest) (*isolatorv1.RecoverResponse, error) {
	var cs []isolators.Container
	for _, c := range r.Containers {
		cs = append(cs, containerFromProto(c))
	}
	return &isolatorv1.RecoverResponse{}, fail(s.p.Recover(ctx, cs))
}

func (s *server) Prepare(ctx context.Context, r *isolatorv1.PrepareRequest) (*isolatorv1.PrepareResponse, error) {
	p, err := s.p.Prepare(ctx, containerFromProto(r.GetContainer()))
	if err != nil {
		return nil, fail(err)
	}
	resp := &isolatorv1.PrepareResponse{Env: p.Env}
	for _, m := range p.Mounts {
		resp.Mounts = append(resp.Mounts, &isolatorv1.Mount{Source: m.Source, Destination: m.Destination})
	}
	return resp, nil
}

func (s *server) Isolate(ctx context.Context, r *isolatorv1.IsolateRequest) (*isolatorv1.IsolateResponse, error) {
	return &isolatorv1.IsolateResponse{}, fail(s.p.Isolate(ctx, containerFromProto(r.GetContainer()), int(r.GetPid())))
}

func (s *server) Watch(ctx context.Context, r *isolatorv1.WatchRequest) (*isolatorv1.WatchResponse, error) {
	l, err := s.p.Watch(ctx, containerFromProto(r.GetContainer()))
	if err != nil {
		return nil, fail(err)
	}
	resp := &isolatorv1.WatchResponse{}
	if l != nil {
		reason, _ := l.Reason.MarshalText() // "" for none: the agent reads it as REASON_CONTAINER_LIMITATION
		resp.Limitation = &isolatorv1.Limitation{Reason: string(reason), Message: l.Message}
	}
	return resp, nil
}

func (s *server) Update(ctx context.Context, r *isolatorv1.UpdateRequest) (*isolatorv1.UpdateResponse, error) {
	return &isolatorv1.UpdateResponse{}, fail(s.p.Update(ctx, containerFromProto(r.GetContainer()), resourcesFromProto(r.GetResources())))
}

func (s *server) Usage(ctx context.Context, r *isolatorv1.UsageRequest) (*isolatorv1.UsageResponse, error) {
	var u isolators.Usage
	if err := s.p.Usage(ctx, containerFromProto(r.GetContainer()), &u); err != nil {
		return nil, fail(err)
	}
	return &isolatorv1.UsageResponse{DiskBytes: u.DiskBytes}, nil
}

func (s *server) Status(ctx context.Context, r *isolatorv1.StatusRequest) (*isolatorv1.StatusResponse, error) {
	st, err := s.p.Status(ctx, containerFromProto(r.GetContainer()))
	return &isolatorv1.StatusResponse{Status: st}, fail(err)
}

func (s *server) Cleanup(ctx context.Context, r *isolatorv1.CleanupRequest) (*isolatorv1.CleanupResponse, error) {
	return &isolatorv1.CleanupResponse{}, fail(s.p.Cleanup(ctx, containerFromProto(r.GetContainer())))
}

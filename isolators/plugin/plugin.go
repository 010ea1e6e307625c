// Package plugin runs isolators outside the agent. Client is the agent's
// side: an isolators.Isolator that calls a plugin serving
// gearbox.isolator.v1.Isolator on a unix socket. Serve and Base are the
// SDK: a plugin implements Plugin (embedding Base for the steps it does
// not need) and calls Serve.
//
// gRPC reconnects by itself, so a plugin that restarts is picked up again.
// A required plugin that fails or times out fails the step (a launch then
// ends TASK_FAILED with REASON_CONTAINER_LAUNCH_FAILED and the plugin's
// name); an optional one is logged and skipped.
package plugin

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gearboxd/gearbox/isolators"
	isolatorv1 "github.com/gearboxd/gearbox/proto/gearbox/isolator/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Prepared is what a plugin's Prepare adds to a container.
type Prepared struct {
	Env    []string
	Mounts []Mount // read-only binds
}

// Mount binds a host path into the container, read-only.
type Mount struct{ Source, Destination string }

// Plugin is what a plugin implements: the isolator lifecycle, with
// Prepare answering in data rather than spec functions.
type Plugin interface {
	Recover(ctx context.Context, cs []isolators.Container) error
	Prepare(ctx context.Context, c isolators.Container) (Prepared, error)
	Isolate(ctx context.Context, c isolators.Container, pid int) error
	Watch(ctx context.Context, c isolators.Container) (*isolators.Limitation, error)
	Update(ctx context.Context, c isolators.Container, r isolators.Resources) error
	Usage(ctx context.Context, c isolators.Container, u *isolators.Usage) error
	Status(ctx context.Context, c isolators.Container) (map[string]string, error)
	Cleanup(ctx context.Context, c isolators.Container) error
}

// Config names a plugin.
type Config struct {
	Name     string
	Socket   string
	Required bool
	Timeout  time.Duration
}

// Client is a plugin, seen as an isolator.
type Client struct {
	cfg  Config
	conn *grpc.ClientConn
	c    isolatorv1.IsolatorClient
	log  *slog.Logger
}

var _ isolators.Isolator = (*Client)(nil)

// NewClient connects lazily: a plugin that is not up yet is tried at each
// call.
func NewClient(cfg Config, log *slog.Logger) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	conn, err := grpc.NewClient("unix://"+cfg.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("isolator plugin %q: %w", cfg.Name, err)
	}
	return &Client{cfg: cfg, conn: conn, c: isolatorv1.NewIsolatorClient(conn), log: log}, nil
}

// Close ends the connection.
func (p *Client) Close() error { return p.conn.Close() }

func (p *Client) Name() string { return "plugin/" + p.cfg.Name }

// call runs one step with the plugin's deadline and its policy: a required
// plugin's failure is the step's failure, an optional one's is logged.
func (p *Client) call(ctx context.Context, step string, fn func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	err := fn(ctx)
	if err == nil {
		return nil
	}
	if p.cfg.Required {
		return fmt.Errorf("isolator plugin %q (required) failed in %s: %w", p.cfg.Name, step, err)
	}
	p.log.Warn("optional isolator plugin failed; skipped", "plugin", p.cfg.Name, "step", step, "err", err)
	return nil
}

func (p *Client) Recover(ctx context.Context, cs []isolators.Container) error {
	req := &isolatorv1.RecoverRequest{}
	for _, c := range cs {
		req.Containers = append(req.Containers, containerToProto(c))
	}
	return p.call(ctx, "Recover", func(ctx context.Context) error { _, err := p.c.Recover(ctx, req); return err })
}

func (p *Client) Prepare(ctx context.Context, c isolators.Container) ([]oci.SpecOpts, error) {
	var resp *isolatorv1.PrepareResponse
	err := p.call(ctx, "Prepare", func(ctx context.Context) error {
		var err error
		resp, err = p.c.Prepare(ctx, &isolatorv1.PrepareRequest{Container: containerToProto(c)})
		return err
	})
	if err != nil || resp == nil {
		return nil, err
	}
	var opts []oci.SpecOpts
	if len(resp.Env) > 0 {
		opts = append(opts, oci.WithEnv(resp.Env))
	}
	var mounts []specs.Mount
	for _, m := range resp.Mounts {
		mounts = append(mounts, specs.Mount{Source: m.Source, Destination: m.Destination, Type: "bind", Options: []string{"rbind", "ro"}})
	}
	if len(mounts) > 0 {
		opts = append(opts, oci.WithMounts(mounts))
	}
	return opts, nil
}

func (p *Client) Isolate(ctx context.Context, c isolators.Container, pid int) error {
	return p.call(ctx, "Isolate", func(ctx context.Context) error {
		_, err := p.c.Isolate(ctx, &isolatorv1.IsolateRequest{Container: containerToProto(c), Pid: int32(pid)})
		return err
	})
}

func (p *Client) Watch(ctx context.Context, c isolators.Container) (*isolators.Limitation, error) {
	var resp *isolatorv1.WatchResponse
	err := p.call(ctx, "Watch", func(ctx context.Context) error {
		var err error
		resp, err = p.c.Watch(ctx, &isolatorv1.WatchRequest{Container: containerToProto(c)})
		return err
	})
	if err != nil || resp.GetLimitation() == nil {
		return nil, err
	}
	return limitationFromProto(resp.Limitation, p.cfg.Name), nil
}

// limitationFromProto reads a plugin's limitation. Its reason is a name on
// the wire; one this agent does not know (or none) is the generic
// REASON_CONTAINER_LIMITATION, and the message keeps the name the plugin gave.
func limitationFromProto(l *isolatorv1.Limitation, plugin string) *isolators.Limitation {
	out := &isolators.Limitation{Message: fmt.Sprintf("%s (isolator plugin %s)", l.GetMessage(), plugin)}
	if err := out.Reason.UnmarshalText([]byte(l.GetReason())); err != nil || out.Reason == typesv1.Reason_REASON_UNSPECIFIED {
		out.Reason = typesv1.Reason_REASON_CONTAINER_LIMITATION
		if l.GetReason() != "" {
			out.Message = fmt.Sprintf("%s (isolator plugin %s, reason %s)", l.GetMessage(), plugin, l.GetReason())
		}
	}
	return out
}

func (p *Client) Update(ctx context.Context, c isolators.Container, r isolators.Resources) error {
	return p.call(ctx, "Update", func(ctx context.Context) error {
		_, err := p.c.Update(ctx, &isolatorv1.UpdateRequest{Container: containerToProto(c), Resources: resourcesToProto(r)})
		return err
	})
}

func (p *Client) Usage(ctx context.Context, c isolators.Container, u *isolators.Usage) error {
	return p.call(ctx, "Usage", func(ctx context.Context) error {
		resp, err := p.c.Usage(ctx, &isolatorv1.UsageRequest{Container: containerToProto(c)})
		if err == nil {
			u.DiskBytes = resp.DiskBytes
		}
		return err
	})
}

func (p *Client) Status(ctx context.Context, c isolators.Container) (map[string]string, error) {
	var out map[string]string
	err := p.call(ctx, "Status", func(ctx context.Context) error {
		resp, err := p.c.Status(ctx, &isolatorv1.StatusRequest{Container: containerToProto(c)})
		if err == nil {
			out = resp.Status
		}
		return err
	})
	return out, err
}

func (p *Client) Cleanup(ctx context.Context, c isolators.Container) error {
	return p.call(ctx, "Cleanup", func(ctx context.Context) error {
		_, err := p.c.Cleanup(ctx, &isolatorv1.CleanupRequest{Container: containerToProto(c)})
		return err
	})
}

// The one place where isolators types and the plugin protocol meet.

func containerToProto(c isolators.Container) *isolatorv1.Container {
	return &isolatorv1.Container{Id: c.ID, CgroupPath: c.CgroupPath, Resources: resourcesToProto(c.Resources), Sandbox: c.Sandbox, Labels: c.Labels}
}

func containerFromProto(c *isolatorv1.Container) isolators.Container {
	return isolators.Container{ID: c.GetId(), CgroupPath: c.GetCgroupPath(), Resources: resourcesFromProto(c.GetResources()), Sandbox: c.GetSandbox(), Labels: c.GetLabels()}
}

func resourcesToProto(r isolators.Resources) *isolatorv1.Resources {
	return &isolatorv1.Resources{Cpus: r.CPUs, Memory: r.Memory, MemorySoft: r.MemorySoft, Pids: r.Pids}
}

func resourcesFromProto(r *isolatorv1.Resources) isolators.Resources {
	return isolators.Resources{CPUs: r.GetCpus(), Memory: r.GetMemory(), MemorySoft: r.GetMemorySoft(), Pids: r.GetPids()}
}

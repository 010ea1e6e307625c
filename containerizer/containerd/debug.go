package containerd

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/containerd/containerd/api/types/runc/options"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/errdefs"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/ids"
	"github.com/gearboxd/gearbox/isolators"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// labelDebugOf marks a debug container in containerd with its target. A
// debug container lives as long as its session: a restarted agent finds it
// unknown to its checkpoint and destroys it.
const labelDebugOf = "gearbox.debug_of"

// debug runs a debug container for a session: cfg.Image's root filesystem,
// joined to the target's pid, network and IPC namespaces (so that an image
// without a shell can be debugged from one that has tools), with a cgroup
// of its own under the target's. Closing the session removes it all.
func (z *Containerizer) debug(ctx context.Context, target containerizer.Container, targetTask client.Task, cfg containerizer.ExecConfig, eio containerizer.ExecIO) (containerizer.Exec, error) {
	if err := z.CheckResources(cfg.Resources, false); err != nil {
		return nil, err
	}
	img, ref, err := z.debugImage(ctx, cfg.Image)
	if err != nil {
		return nil, err
	}
	release, err := z.execSlot(ctx)
	if err != nil {
		return nil, err
	}
	defer release()
	// Setting up runs to its end whatever the caller does meanwhile; Close
	// undoes it.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 60*time.Second)
	defer cancel()
	if ok, err := img.IsUnpacked(ctx, z.cfg.Snapshotter); err != nil || !ok {
		if err := img.Unpack(ctx, z.cfg.Snapshotter); err != nil {
			return nil, fmt.Errorf("unpacking image %q: %w", ref, err)
		}
	}
	child := "debug-" + ids.New()
	id := string(target.ID) + "." + child
	cgroup := z.cgroupPath(target.ID) + "/" + child
	if z.cfg.SystemdCgroup {
		// systemd's slices cannot nest a unit under a scope: a sibling.
		cgroup = z.cgroupPath(containerizer.ContainerID(id))
	}
	targetSpec, err := z.networkSpec(ctx, target)
	if err != nil {
		return nil, err
	}
	opts := debugSpec(oci.WithImageConfig(img), cfg, targetTask.Pid(), cgroup, targetSpec)
	// Limits asked for go through the isolators, as a container's do; none
	// asked: the target's limits bound it from above.
	iso := isolators.Container{ID: id, CgroupPath: CgroupDir(cgroup), Resources: cfg.Resources}
	limited := !cfg.Resources.IsZero()
	if limited {
		o, err := z.prepareDebugIsolation(ctx, iso)
		if err != nil {
			return nil, err
		}
		opts = append(opts, o...)
	}
	cont, err := z.newDebugContainer(ctx, id, target, img, opts)
	if err != nil {
		return nil, err
	}
	e := &execProc{z: z}
	e.after = func(ctx context.Context) {
		if err := cont.Delete(ctx, client.WithSnapshotCleanup); err != nil && !errdefs.IsNotFound(err) {
			z.log.Warn("removing a debug container", "container_id", id, "err", err)
		}
		if limited {
			for _, i := range z.cfg.Isolators {
				i.Cleanup(ctx, iso)
			}
		}
	}
	if spec, err := cont.Spec(ctx); err == nil && (spec.Process == nil || len(spec.Process.Args) == 0) {
		e.after(ctx)
		return nil, errs.WithInfo(errs.New(errdefs.ErrInvalidArgument, "image %q has neither entrypoint nor cmd, and the debug session gives no command", ref),
			typesv1.ErrorReasonNoCommand, "image", cfg.Image, "container_id", string(target.ID))
	}
	creator, err := z.sessionIO(cfg, eio, e)
	if err != nil {
		e.after(ctx)
		return nil, err
	}
	task, err := cont.NewTask(ctx, creator)
	if err != nil {
		e.after(ctx)
		command := strings.Join(cfg.Args, " ")
		return nil, startError(err, command, "image "+ref, "creating debug container "+id)
	}
	e.proc = task
	if e.exit, err = task.Wait(context.WithoutCancel(ctx)); err != nil {
		e.Close()
		return nil, err
	}
	if err := task.Start(ctx); err != nil {
		e.Close()
		return nil, fmt.Errorf("starting debug container %s: %w", id, err)
	}
	if cfg.TTY && cfg.Width > 0 && cfg.Height > 0 {
		task.Resize(ctx, cfg.Width, cfg.Height)
	}
	z.log.Info("debug container started", "container_id", id, "image", ref)
	return e, nil
}

// newDebugContainer creates the debug container in containerd, with the
// target's runtime; on an error nothing of it is left there.
func (z *Containerizer) newDebugContainer(ctx context.Context, id string, target containerizer.Container, img client.Image, opts []oci.SpecOpts) (client.Container, error) {
	profile := z.cfg.Runtimes[target.Runtime]
	var rtOpts any
	if profile.Type == runcShimType {
		rtOpts = &options.Options{BinaryName: profile.Binary, SystemdCgroup: z.cfg.SystemdCgroup}
	}
	cont, err := z.client.NewContainer(ctx, id,
		client.WithImage(img),
		client.WithSnapshotter(z.cfg.Snapshotter),
		client.WithNewSnapshot(id, img),
		client.WithNewSpec(opts...),
		client.WithRuntime(profile.Type, rtOpts),
		client.WithContainerLabels(map[string]string{labelDebugOf: string(target.ID)}),
	)
	if err != nil {
		z.client.SnapshotService(z.cfg.Snapshotter).Remove(ctx, id)
		return nil, fmt.Errorf("creating debug container %s: %w", id, err)
	}
	return cont, nil
}

// debugImage is the debug container's image, present on the agent (a
// debug session does not pull), and its normalised reference.
func (z *Containerizer) debugImage(ctx context.Context, image string) (client.Image, string, error) {
	ref, err := NormalizeRef(image)
	if err != nil {
		return nil, "", err
	}
	img, err := z.client.GetImage(ctx, ref)
	if errdefs.IsNotFound(err) {
		return nil, "", errs.WithInfo(errs.New(errdefs.ErrNotFound, "image %q is not present on this agent", ref),
			typesv1.ErrorReasonImageNotFound, "image", image)
	}
	if err != nil {
		return nil, "", fmt.Errorf("looking up image %q: %w", ref, err)
	}
	z.touchImage(ctx, ref)
	return img, ref, nil
}

// prepareDebugIsolation is the isolators' spec options for a debug
// container given limits of its own.
func (z *Containerizer) prepareDebugIsolation(ctx context.Context, iso isolators.Container) ([]oci.SpecOpts, error) {
	var opts []oci.SpecOpts
	for _, i := range z.cfg.Isolators {
		o, err := i.Prepare(ctx, iso)
		if err != nil {
			return nil, fmt.Errorf("isolator %s: %w", i.Name(), err)
		}
		opts = append(opts, o...)
	}
	return opts, nil
}

// networkSpec is the spec of a target off the host network (whose network
// files a debug container sees); nil on the host network.
func (z *Containerizer) networkSpec(ctx context.Context, target containerizer.Container) (*specs.Spec, error) {
	if target.Network.IsHost() {
		return nil, nil
	}
	cont, err := z.client.LoadContainer(ctx, string(target.ID))
	if err != nil {
		return nil, fmt.Errorf("loading container %s: %w", target.ID, err)
	}
	s, err := cont.Spec(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the spec of container %s: %w", target.ID, err)
	}
	return s, nil
}

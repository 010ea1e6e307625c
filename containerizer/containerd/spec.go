package containerd

import (
	"context"
	"fmt"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/contrib/seccomp"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/containerizer"
)

// OCI spec assembly, in one place: what a container, a debug container and
// a nested container (or exec) run as. Each is plain composition of
// options (or, for a process in a running container, a copy of its
// process) with no containerd call, so that tests apply them to a default
// spec. imageConfig is the image's part (oci.WithImageConfig); it comes
// first, so that what the launch asks for overrides the image.

// launchSpec is a container's spec: the image's config, the resolved
// args, host networking (unless it asks for another network), the sandbox bind-mounted at SandboxMount, the
// cgroup path; unprivileged containers get no new privileges and the
// default seccomp profile. Isolators' options follow it.
func launchSpec(imageConfig oci.SpecOpts, cfg containerizer.LaunchConfig, args []string, sandbox, cgroup string) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		imageConfig,
		oci.WithProcessArgs(args...),
	}
	if cfg.Network.IsHost() {
		// Host networking, as Mesos without a network isolator; any other
		// network is the network isolator's (its options follow).
		opts = append(opts, oci.WithHostNamespace(specs.NetworkNamespace), oci.WithHostHostsFile, oci.WithHostResolvconf)
	}
	opts = append(opts,
		oci.WithMounts([]specs.Mount{{
			// nosuid,nodev: a setuid binary or a device node a container
			// makes in its sandbox is inert, in it and in any other
			// container that is given it.
			Destination: SandboxMount, Type: "bind", Source: sandbox,
			Options: []string{"rbind", "rw", "nosuid", "nodev"},
		}}),
		oci.WithEnv(append([]string{"GEARBOX_SANDBOX=" + SandboxMount}, cfg.Env...)),
		oci.WithCgroup(cgroup),
	)
	if cfg.Privileged {
		opts = append(opts, oci.WithPrivileged, oci.WithAllDevicesAllowed, oci.WithHostDevices)
	} else {
		// The runtime's default capabilities, no new privileges, containerd's
		// default seccomp profile; the default spec already masks and
		// read-only-mounts the sensitive /proc paths.
		opts = append(opts, oci.WithNoNewPrivileges, seccomp.WithDefaultProfile())
	}
	if cfg.WorkingDir != nil {
		opts = append(opts, oci.WithProcessCwd(*cfg.WorkingDir))
	}
	if cfg.User != nil {
		opts = append(opts, oci.WithUser(*cfg.User))
	}
	if cfg.TTY {
		opts = append(opts, oci.WithTTY)
		if cfg.Width > 0 && cfg.Height > 0 {
			opts = append(opts, oci.WithTTYSize(int(cfg.Width), int(cfg.Height)))
		}
	}
	return opts
}

// debugSpec is a debug container's spec: its image's root filesystem and
// config, joined to the pid, network and IPC namespaces of the target's
// process pid, in cgroup, with no new privileges and the default seccomp
// profile. Args empty: the image's entrypoint and cmd. Isolators' options
// follow it when limits are asked for. target is the target's spec: off
// the host network, the debug container sees its hostname and its
// /etc/hosts, /etc/hostname and /etc/resolv.conf.
func debugSpec(imageConfig oci.SpecOpts, cfg containerizer.ExecConfig, pid uint32, cgroup string, target *specs.Spec) []oci.SpecOpts {
	opts := []oci.SpecOpts{
		imageConfig,
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.PIDNamespace, Path: fmt.Sprintf("/proc/%d/ns/pid", pid)}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: fmt.Sprintf("/proc/%d/ns/net", pid)}),
		oci.WithLinuxNamespace(specs.LinuxNamespace{Type: specs.IPCNamespace, Path: fmt.Sprintf("/proc/%d/ns/ipc", pid)}),
	}
	if files := networkFiles(target); len(files) > 0 {
		opts = append(opts, oci.WithHostname(target.Hostname), oci.WithMounts(files))
	} else {
		opts = append(opts, oci.WithHostHostsFile, oci.WithHostResolvconf)
	}
	opts = append(opts,
		oci.WithEnv(cfg.Env),
		oci.WithCgroup(cgroup),
		oci.WithNoNewPrivileges,
		seccomp.WithDefaultProfile(),
	)
	if len(cfg.Args) > 0 {
		opts = append(opts, oci.WithProcessArgs(cfg.Args...))
	}
	if cfg.TTY {
		opts = append(opts, oci.WithTTY)
		if cfg.Width > 0 && cfg.Height > 0 {
			opts = append(opts, oci.WithTTYSize(int(cfg.Width), int(cfg.Height)))
		}
	}
	if cfg.WorkingDir != nil {
		opts = append(opts, oci.WithProcessCwd(*cfg.WorkingDir))
	}
	if cfg.User != nil {
		opts = append(opts, oci.WithUser(*cfg.User))
	}
	return opts
}

// networkFiles are the bind mounts of a container's own network files (a
// container off the host network has them; one on it, none).
func networkFiles(s *specs.Spec) []specs.Mount {
	if s == nil {
		return nil
	}
	var out []specs.Mount
	for _, m := range s.Mounts {
		switch m.Destination {
		case "/etc/hosts", "/etc/hostname", "/etc/resolv.conf":
			if m.Type == "bind" {
				out = append(out, m)
			}
		}
	}
	return out
}

// execSpec is the process of an exec or a nested container in cont: a
// copy of the container's own with the exec's command, environment, user
// and directory.
func execSpec(ctx context.Context, cont client.Container, cfg containerizer.ExecConfig) (*specs.Process, error) {
	spec, err := cont.Spec(ctx)
	if err != nil || spec.Process == nil {
		return nil, fmt.Errorf("reading the spec of container %s: %w", cont.ID(), err)
	}
	return execProcess(spec.Process, cfg)
}

// execProcess derives an exec's process from its container's.
func execProcess(base *specs.Process, cfg containerizer.ExecConfig) (*specs.Process, error) {
	p := *base
	p.Args, p.Terminal = cfg.Args, cfg.TTY
	p.Env = append(append([]string{}, p.Env...), cfg.Env...)
	if cfg.WorkingDir != nil {
		p.Cwd = *cfg.WorkingDir
	}
	if cfg.User != nil {
		uid, gid, err := parseUIDGID(*cfg.User)
		if err != nil {
			return nil, err
		}
		p.User = specs.User{UID: uid, GID: gid}
	}
	if cfg.TTY && cfg.Width > 0 && cfg.Height > 0 {
		p.ConsoleSize = &specs.Box{Width: uint(cfg.Width), Height: uint(cfg.Height)}
	}
	return &p, nil
}

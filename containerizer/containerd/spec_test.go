package containerd

import (
	"context"
	"reflect"
	"slices"
	"testing"

	"github.com/containerd/containerd/v2/core/containers"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/opencontainers/runtime-spec/specs-go"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/isolators"
)

// withImage stands in for oci.WithImageConfig: what an image's config
// sets (args, env, cwd, user), so that the tests see the launch override it.
func withImage(_ context.Context, _ oci.Client, _ *containers.Container, s *oci.Spec) error {
	s.Process.Args = []string{"/image-entry", "image-cmd"}
	s.Process.Env = append(s.Process.Env, "FROM_IMAGE=1")
	s.Process.Cwd = "/image-dir"
	s.Process.User = specs.User{UID: 7, GID: 7}
	return nil
}

// apply composes opts over containerd's default spec, as
// client.WithNewSpec does.
func apply(t *testing.T, id string, opts []oci.SpecOpts) *oci.Spec {
	t.Helper()
	ctx := namespaces.WithNamespace(context.Background(), "spec-test")
	s, err := oci.GenerateSpec(ctx, nil, &containers.Container{ID: id}, opts...)
	if err != nil {
		t.Fatalf("applying the options to a default spec: %v", err)
	}
	return s
}

func namespacesOf(s *oci.Spec) map[specs.LinuxNamespaceType]string {
	out := map[specs.LinuxNamespaceType]string{}
	for _, ns := range s.Linux.Namespaces {
		out[ns.Type] = ns.Path
	}
	return out
}

func mountAt(s *oci.Spec, dest string) *specs.Mount {
	for i := range s.Mounts {
		if s.Mounts[i].Destination == dest {
			return &s.Mounts[i]
		}
	}
	return nil
}

func TestLaunchSpec(t *testing.T) {
	wd, user := "/work", "1000:1001"
	cfg := containerizer.LaunchConfig{ID: "c1", Env: []string{"A=1"}, WorkingDir: &wd, User: &user, TTY: true, Width: 132, Height: 43}
	s := apply(t, "c1", launchSpec(withImage, cfg, []string{"/bin/sh", "-c", "true"}, "/var/lib/gearbox/sandboxes/c1", "/gearbox/c1"))

	if !reflect.DeepEqual(s.Process.Args, []string{"/bin/sh", "-c", "true"}) {
		t.Errorf("args %q: the resolved args replace the image's", s.Process.Args)
	}
	for _, e := range []string{"FROM_IMAGE=1", "GEARBOX_SANDBOX=" + SandboxMount, "A=1"} {
		if !slices.Contains(s.Process.Env, e) {
			t.Errorf("env %q lacks %s", s.Process.Env, e)
		}
	}
	if s.Process.Cwd != "/work" || s.Process.User.UID != 1000 || s.Process.User.GID != 1001 || !s.Process.Terminal {
		t.Errorf("cwd %q user %+v terminal %v: the launch's working dir, user and TTY override the image's", s.Process.Cwd, s.Process.User, s.Process.Terminal)
	}
	if s.Process.ConsoleSize == nil || s.Process.ConsoleSize.Width != 132 || s.Process.ConsoleSize.Height != 43 {
		t.Errorf("console size %+v, want the launch's 132x43", s.Process.ConsoleSize)
	}
	m := mountAt(s, SandboxMount)
	if m == nil || m.Source != "/var/lib/gearbox/sandboxes/c1" || m.Type != "bind" {
		t.Errorf("sandbox mount %+v, want a bind of the sandbox at %s", m, SandboxMount)
	}
	if mountAt(s, "/etc/hosts") == nil || mountAt(s, "/etc/resolv.conf") == nil {
		t.Error("the host's /etc/hosts and /etc/resolv.conf are not mounted (host networking)")
	}
	if _, private := namespacesOf(s)[specs.NetworkNamespace]; private {
		t.Error("a network namespace of its own: containers share the host's network")
	}
	if _, ok := namespacesOf(s)[specs.PIDNamespace]; !ok {
		t.Error("no pid namespace of its own")
	}
	if s.Linux.CgroupsPath != "/gearbox/c1" {
		t.Errorf("cgroup path %q", s.Linux.CgroupsPath)
	}
	if !s.Process.NoNewPrivileges || s.Linux.Seccomp == nil {
		t.Errorf("unprivileged: no_new_privileges %v, seccomp %v; want both", s.Process.NoNewPrivileges, s.Linux.Seccomp != nil)
	}
	if slices.Contains(s.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") {
		t.Error("an unprivileged container has CAP_SYS_ADMIN")
	}

	// Privileged: every capability and no seccomp profile.
	priv := apply(t, "c2", launchSpec(withImage, containerizer.LaunchConfig{ID: "c2", Privileged: true}, nil, "/sb", "/gearbox/c2"))
	if !slices.Contains(priv.Process.Capabilities.Bounding, "CAP_SYS_ADMIN") || priv.Linux.Seccomp != nil {
		t.Errorf("privileged: CAP_SYS_ADMIN %v, seccomp %v", slices.Contains(priv.Process.Capabilities.Bounding, "CAP_SYS_ADMIN"), priv.Linux.Seccomp != nil)
	}
	// Nothing asked: the image's directory and user stand.
	plain := apply(t, "c3", launchSpec(withImage, containerizer.LaunchConfig{ID: "c3"}, []string{"x"}, "/sb", "/gearbox/c3"))
	if plain.Process.Cwd != "/image-dir" || plain.Process.User.UID != 7 || plain.Process.Terminal {
		t.Errorf("cwd %q user %+v terminal %v: want the image's, and no TTY", plain.Process.Cwd, plain.Process.User, plain.Process.Terminal)
	}
}

func TestDebugSpec(t *testing.T) {
	user := "0:0"
	cfg := containerizer.ExecConfig{Image: "tools", Args: []string{"sh"}, Env: []string{"D=1"}, TTY: true, Width: 120, Height: 40, User: &user}
	s := apply(t, "c1.debug-x", debugSpec(withImage, cfg, 4242, "/gearbox/c1/debug-x", nil))
	ns := namespacesOf(s)
	for typ, want := range map[specs.LinuxNamespaceType]string{
		specs.PIDNamespace: "/proc/4242/ns/pid", specs.NetworkNamespace: "/proc/4242/ns/net", specs.IPCNamespace: "/proc/4242/ns/ipc",
	} {
		if ns[typ] != want {
			t.Errorf("%s namespace %q, want the target's %s", typ, ns[typ], want)
		}
	}
	if p, ok := ns[specs.MountNamespace]; !ok || p != "" {
		t.Errorf("mount namespace %q (present %v): the debug container has its own root filesystem", p, ok)
	}
	if !reflect.DeepEqual(s.Process.Args, []string{"sh"}) || !slices.Contains(s.Process.Env, "D=1") || !slices.Contains(s.Process.Env, "FROM_IMAGE=1") {
		t.Errorf("args %q env %q", s.Process.Args, s.Process.Env)
	}
	if !s.Process.Terminal || s.Process.ConsoleSize == nil || s.Process.ConsoleSize.Width != 120 || s.Process.ConsoleSize.Height != 40 {
		t.Errorf("terminal %v size %+v, want a TTY of 120x40", s.Process.Terminal, s.Process.ConsoleSize)
	}
	if s.Linux.CgroupsPath != "/gearbox/c1/debug-x" || !s.Process.NoNewPrivileges || s.Linux.Seccomp == nil {
		t.Errorf("cgroup %q no_new_privileges %v seccomp %v", s.Linux.CgroupsPath, s.Process.NoNewPrivileges, s.Linux.Seccomp != nil)
	}
	// No args: the image's entrypoint and cmd.
	img := apply(t, "c1.debug-y", debugSpec(withImage, containerizer.ExecConfig{Image: "tools"}, 1, "/cg", nil))
	if !reflect.DeepEqual(img.Process.Args, []string{"/image-entry", "image-cmd"}) {
		t.Errorf("args %q, want the image's", img.Process.Args)
	}
}

// A nested container's (or an exec's) process is its container's with
// the exec's command, env, directory and user; the container's is left
// as it was.
func TestExecProcess(t *testing.T) {
	base := apply(t, "parent", []oci.SpecOpts{withImage, oci.WithEnv([]string{"P=1"}), oci.WithNoNewPrivileges})
	before := *base.Process
	wd, user := "/tmp", "1000:1000"
	p, err := execProcess(base.Process, containerizer.ExecConfig{Args: []string{"ls"}, Env: []string{"E=2"}, WorkingDir: &wd, User: &user, TTY: true, Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(p.Args, []string{"ls"}) || !slices.Contains(p.Env, "P=1") || !slices.Contains(p.Env, "E=2") {
		t.Errorf("args %q env %q: the exec's command, the container's env plus the exec's", p.Args, p.Env)
	}
	if p.Cwd != "/tmp" || p.User.UID != 1000 || !p.Terminal || p.ConsoleSize == nil || p.ConsoleSize.Width != 80 {
		t.Errorf("cwd %q user %+v terminal %v size %+v", p.Cwd, p.User, p.Terminal, p.ConsoleSize)
	}
	if !p.NoNewPrivileges || !reflect.DeepEqual(p.Capabilities, base.Process.Capabilities) {
		t.Error("the exec does not keep the container's privileges as they are")
	}
	if !reflect.DeepEqual(*base.Process, before) {
		t.Error("deriving the exec changed the container's own process")
	}
	if _, err := execProcess(base.Process, containerizer.ExecConfig{Args: []string{"ls"}, User: &[]string{"nobody"}[0]}); err == nil {
		t.Error("a user by name: want an error (uid[:gid] only)")
	}
}

// Off the host network the spec leaves the network namespace and the
// network files to the network isolator; a debug container of such a
// target sees the target's hostname and files.
func TestNetworkSpec(t *testing.T) {
	host := apply(t, "h", launchSpec(withImage, containerizer.LaunchConfig{ID: "h"}, []string{"x"}, "/sb", "/gearbox/h"))
	if p, ok := namespacesOf(host)[specs.NetworkNamespace]; ok {
		t.Errorf("host network: a network namespace %q", p)
	}
	if !hasMount(host, "/etc/hosts", "/etc/hosts") {
		t.Error("host network: no /etc/hosts of the host's")
	}
	cfg := containerizer.LaunchConfig{ID: "n", Network: isolators.Network{Name: "gearbox"}}
	own := apply(t, "n", launchSpec(withImage, cfg, []string{"x"}, "/sb", "/gearbox/n"))
	if p, ok := namespacesOf(own)[specs.NetworkNamespace]; !ok || p != "" {
		t.Errorf("a CNI network: network namespace %q (present %v), want a new one the isolator names", p, ok)
	}
	for _, m := range own.Mounts {
		if m.Destination == "/etc/hosts" || m.Destination == "/etc/resolv.conf" {
			t.Errorf("a CNI network: the host's %s is mounted", m.Destination)
		}
	}
	target := &specs.Spec{Hostname: "web", Mounts: []specs.Mount{
		{Destination: "/etc/hosts", Type: "bind", Source: "/run/gearbox/cni/containers/web/hosts"},
		{Destination: "/etc/resolv.conf", Type: "bind", Source: "/run/gearbox/cni/containers/web/resolv.conf"},
		{Destination: "/mnt/sandbox", Type: "bind", Source: "/sb"},
	}}
	dbg := apply(t, "web.debug-x", debugSpec(withImage, containerizer.ExecConfig{Image: "tools"}, 1, "/cg", target))
	if dbg.Hostname != "web" || !hasMount(dbg, "/etc/hosts", "/run/gearbox/cni/containers/web/hosts") ||
		!hasMount(dbg, "/etc/resolv.conf", "/run/gearbox/cni/containers/web/resolv.conf") || hasMount(dbg, "/mnt/sandbox", "/sb") {
		t.Errorf("debug of a networked target: hostname %q mounts %+v", dbg.Hostname, dbg.Mounts)
	}
}

func hasMount(s *specs.Spec, dest, src string) bool {
	for _, m := range s.Mounts {
		if m.Destination == dest && m.Source == src {
			return true
		}
	}
	return false
}

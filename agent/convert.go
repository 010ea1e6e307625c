package agent

import (
	"math"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/isolators"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// The one place where domain and proto types meet (round-trip tested).

func launchFromProto(r *agentv1.LaunchContainerRequest) containerizer.LaunchConfig {
	cfg := containerizer.LaunchConfig{
		ID:         containerizer.ContainerID(r.GetContainerId()),
		Image:      r.GetImage(),
		Env:        r.GetEnv(),
		WorkingDir: r.WorkingDir,
		User:       r.User,
		Runtime:    r.GetRuntime(),
		Labels:     r.GetLabels(),
		AutoRemove: r.GetAutoRemove(),
		Log:        logFromProto(r.GetLog()),
		Privileged: r.GetPrivileged(),
		Resources:  resourcesFromProto(r.GetResources()),
		Stdin:      r.GetStdin(),
		TTY:        r.GetTty(),
		KillGrace:  r.GetKillPolicy().GetGracePeriod().AsDuration(),
		Pull:       r.GetPullPolicy(),
		Auth:       authFromProto(r.GetRegistryAuth()),
		Restart:    restartFromProto(r.GetRestartPolicy()),
		Network:    networkFromProto(r.GetNetwork(), r.GetHostname(), r.GetPortMappings()),
	}
	if sz := r.GetSize(); sz != nil {
		cfg.Width, cfg.Height = sz.GetWidth(), sz.GetHeight()
	}
	if r.Entrypoint != nil {
		cfg.Entrypoint = append([]string{}, r.Entrypoint.Values...)
	}
	if r.Cmd != nil {
		cfg.Cmd = append([]string{}, r.Cmd.Values...)
	}
	return cfg
}

func launchToProto(cfg containerizer.LaunchConfig) *agentv1.LaunchContainerRequest {
	r := &agentv1.LaunchContainerRequest{
		ContainerId:   string(cfg.ID),
		Image:         cfg.Image,
		Env:           cfg.Env,
		WorkingDir:    cfg.WorkingDir,
		User:          cfg.User,
		Runtime:       cfg.Runtime,
		Labels:        cfg.Labels,
		AutoRemove:    cfg.AutoRemove,
		Log:           logToProto(cfg.Log),
		Privileged:    cfg.Privileged,
		Resources:     resourcesToProto(cfg.Resources),
		Stdin:         cfg.Stdin,
		Tty:           cfg.TTY,
		KillPolicy:    killPolicyToProto(cfg.KillGrace),
		PullPolicy:    cfg.Pull,
		RestartPolicy: restartToProto(cfg.Restart),
		Network:       cfg.Network.Name,
		Hostname:      cfg.Network.Hostname,
		PortMappings:  mappingsToProto(cfg.Network.PortMappings),
	}
	if a := cfg.Auth; a != nil {
		r.RegistryAuth = &agentv1.RegistryAuth{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
	}
	if cfg.Width > 0 || cfg.Height > 0 {
		r.Size = &agentv1.WindowSize{Width: cfg.Width, Height: cfg.Height}
	}
	if cfg.Entrypoint != nil {
		r.Entrypoint = &agentv1.StringList{Values: cfg.Entrypoint}
	}
	if cfg.Cmd != nil {
		r.Cmd = &agentv1.StringList{Values: cfg.Cmd}
	}
	return r
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTS(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime().UTC()
}

func containerToProto(c containerizer.Container) *agentv1.Container {
	return &agentv1.Container{
		Id:              string(c.ID),
		Image:           c.Image,
		ImageDigest:     c.ImageDigest,
		Runtime:         c.Runtime,
		State:           c.State,
		Reason:          c.Reason,
		Message:         c.Message,
		ExitCode:        c.ExitCode,
		Pid:             c.Pid,
		CreatedAt:       ts(c.CreatedAt),
		StartedAt:       ts(c.StartedAt),
		FinishedAt:      ts(c.FinishedAt),
		Args:            c.Args,
		Env:             c.Env,
		WorkingDir:      c.WorkingDir,
		User:            c.User,
		Sandbox:         c.Sandbox,
		Labels:          c.Labels,
		AutoRemove:      c.AutoRemove,
		Log:             logToProto(c.Log),
		LoggingDegraded: c.LoggingDegraded,
		Privileged:      c.Privileged,
		Resources:       resourcesToProto(c.Resources),
		Stdin:           c.Stdin,
		Tty:             c.TTY,
		KillPolicy:      killPolicyToProto(c.KillGrace),
		PullPolicy:      c.Pull,
		RestartPolicy:   restartToProto(c.Restart),
		RestartCount:    uint32(c.RestartCount),
		LastExit:        exitToProto(c.LastExit),
		NextRestartAt:   ts(c.NextRestartAt),
		Network:         c.Network.Name,
		Hostname:        c.Network.Hostname,
		PortMappings:    mappingsToProto(c.Network.PortMappings),
		IpAddresses:     c.IPs,
	}
}

func killPolicyToProto(grace time.Duration) *typesv1.KillPolicy {
	if grace <= 0 {
		return nil
	}
	return &typesv1.KillPolicy{GracePeriod: durationpb.New(grace)}
}

func authFromProto(a *agentv1.RegistryAuth) *containerizer.RegistryAuth {
	if a == nil {
		return nil
	}
	return &containerizer.RegistryAuth{Username: a.Username, Password: a.Password, IdentityToken: a.IdentityToken, RegistryToken: a.RegistryToken}
}

func networkFromProto(name, hostname string, pms []*typesv1.PortMapping) isolators.Network {
	n := isolators.Network{Name: name, Hostname: hostname}
	for _, pm := range pms {
		proto := pm.GetProtocol()
		if proto == "" {
			proto = "tcp"
		}
		// Out-of-range ports keep a value that admission refuses.
		n.PortMappings = append(n.PortMappings, isolators.PortMapping{HostPort: clampPort(pm.GetHostPort()), ContainerPort: clampPort(pm.GetContainerPort()), Protocol: proto})
	}
	return n
}

// clampPort maps a port beyond 65535 to 0; requests with such ports are
// refused before (checkPortNumbers).
func clampPort(p uint32) uint16 {
	if p > 65535 {
		return 0
	}
	return uint16(p)
}

func mappingsToProto(pms []isolators.PortMapping) []*typesv1.PortMapping {
	var out []*typesv1.PortMapping
	for _, pm := range pms {
		out = append(out, &typesv1.PortMapping{HostPort: uint32(pm.HostPort), ContainerPort: uint32(pm.ContainerPort), Protocol: pm.Protocol})
	}
	return out
}

func containerFromProto(p *agentv1.Container) containerizer.Container {
	return containerizer.Container{
		ID:              containerizer.ContainerID(p.GetId()),
		Image:           p.GetImage(),
		ImageDigest:     p.GetImageDigest(),
		Runtime:         p.GetRuntime(),
		State:           p.GetState(),
		Reason:          p.GetReason(),
		Message:         p.GetMessage(),
		ExitCode:        p.ExitCode,
		Pid:             p.GetPid(),
		CreatedAt:       fromTS(p.CreatedAt),
		StartedAt:       fromTS(p.StartedAt),
		FinishedAt:      fromTS(p.FinishedAt),
		Args:            p.GetArgs(),
		Env:             p.GetEnv(),
		WorkingDir:      p.GetWorkingDir(),
		User:            p.GetUser(),
		Sandbox:         p.GetSandbox(),
		Labels:          p.GetLabels(),
		AutoRemove:      p.GetAutoRemove(),
		Log:             logFromProto(p.GetLog()),
		LoggingDegraded: p.GetLoggingDegraded(),
		Privileged:      p.GetPrivileged(),
		Resources:       resourcesFromProto(p.GetResources()),
		Stdin:           p.GetStdin(),
		TTY:             p.GetTty(),
		KillGrace:       p.GetKillPolicy().GetGracePeriod().AsDuration(),
		Pull:            p.GetPullPolicy(),
		Restart:         restartFromProto(p.GetRestartPolicy()),
		RestartCount:    int(p.GetRestartCount()),
		LastExit:        exitFromProto(p.GetLastExit()),
		NextRestartAt:   fromTS(p.NextRestartAt),
		Network:         networkFromProto(p.GetNetwork(), p.GetHostname(), p.GetPortMappings()),
		IPs:             p.GetIpAddresses(),
	}
}

func logFromProto(l *agentv1.LogOptions) containerizer.LogConfig {
	return containerizer.LogConfig{Driver: l.GetDriver(), MaxSize: l.GetMaxSize(), MaxFiles: int(l.GetMaxFiles()), Mode: l.GetMode()}
}

func logToProto(l containerizer.LogConfig) *agentv1.LogOptions {
	if l == (containerizer.LogConfig{}) {
		return nil
	}
	return &agentv1.LogOptions{Driver: l.Driver, MaxSize: l.MaxSize, MaxFiles: int32(l.MaxFiles), Mode: l.Mode}
}

func imageToProto(im containerizer.Image) *agentv1.Image {
	return &agentv1.Image{Name: im.Name, Digest: im.Digest, Size: im.Size, CreatedAt: ts(im.CreatedAt)}
}

func streamsFromProto(ss []agentv1.Stream) []containerizer.Stream {
	var out []containerizer.Stream
	for _, s := range ss {
		switch s {
		case agentv1.Stream_STREAM_STDOUT:
			out = append(out, containerizer.Stdout)
		case agentv1.Stream_STREAM_STDERR:
			out = append(out, containerizer.Stderr)
		}
	}
	return out
}

func resourcesFromProto(r *agentv1.Resources) isolators.Resources {
	out := isolators.Resources{CPUs: r.GetCpus(), Memory: r.GetMemory(), MemorySoft: r.GetMemorySoft(), Pids: r.GetPids()}
	if w := r.GetBlkioWeight(); w > 0 {
		out.BlkioWeight = uint16(min(w, 65535))
	}
	for _, d := range r.GetDevices() {
		out.Devices = append(out.Devices, isolators.DeviceLimit{Path: d.Path, ReadBps: d.ReadBps, WriteBps: d.WriteBps, ReadIops: d.ReadIops, WriteIops: d.WriteIops})
	}
	return out
}

func resourcesToProto(r isolators.Resources) *agentv1.Resources {
	if r.CPUs == 0 && r.Memory == 0 && r.MemorySoft == 0 && r.Pids == 0 && r.BlkioWeight == 0 && len(r.Devices) == 0 {
		return nil
	}
	out := &agentv1.Resources{Cpus: r.CPUs, Memory: r.Memory, MemorySoft: r.MemorySoft, Pids: r.Pids, BlkioWeight: uint32(r.BlkioWeight)}
	for _, d := range r.Devices {
		out.Devices = append(out.Devices, &agentv1.DeviceLimit{Path: d.Path, ReadBps: d.ReadBps, WriteBps: d.WriteBps, ReadIops: d.ReadIops, WriteIops: d.WriteIops})
	}
	return out
}

func usageToProto(id containerizer.ContainerID, u isolators.Usage, r isolators.Resources, at time.Time) *agentv1.ContainerUsage {
	return &agentv1.ContainerUsage{
		ContainerId: string(id), Timestamp: ts(at),
		CpuUserSeconds: u.CPUUserSeconds, CpuSystemSeconds: u.CPUSystemSeconds,
		CpuThrottledPeriods: u.CPUThrottledPeriods, CpuThrottledSeconds: u.CPUThrottledSeconds,
		MemoryUsage: u.MemoryUsage, MemoryRss: u.MemoryRSS, MemoryCache: u.MemoryCache, MemoryPeak: u.MemoryPeak, MemoryLimit: u.MemoryLimit,
		Pids: u.Pids, PidsLimit: u.PidsLimit, IoReadBytes: u.IOReadBytes, IoWriteBytes: u.IOWriteBytes, DiskBytes: u.DiskBytes,
		Resources: resourcesToProto(r),
	}
}

func nestedToProto(n containerizer.NestedContainer) *agentv1.NestedContainer {
	return &agentv1.NestedContainer{
		Id: string(n.ID), Command: n.Args, State: n.State, Reason: n.Reason,
		Message: n.Message, ExitCode: n.ExitCode, Pid: n.Pid, StartedAt: ts(n.StartedAt), FinishedAt: ts(n.FinishedAt),
		Sandbox: n.Sandbox,
	}
}

var restartModes = map[typesv1.RestartMode]containerizer.RestartMode{
	typesv1.RestartMode_RESTART_MODE_NO:             containerizer.RestartNo,
	typesv1.RestartMode_RESTART_MODE_ON_FAILURE:     containerizer.RestartOnFailure,
	typesv1.RestartMode_RESTART_MODE_ALWAYS:         containerizer.RestartAlways,
	typesv1.RestartMode_RESTART_MODE_UNLESS_STOPPED: containerizer.RestartUnlessStopped,
}

// restartFromProto: an enum value this agent does not know becomes a mode
// the containerizer refuses, naming it.
func restartFromProto(p *typesv1.RestartPolicy) containerizer.RestartPolicy {
	if p == nil {
		return containerizer.RestartPolicy{}
	}
	mode, ok := restartModes[p.GetMode()]
	if !ok && p.GetMode() != typesv1.RestartMode_RESTART_MODE_UNSPECIFIED {
		mode = containerizer.RestartMode(p.GetMode().String())
	}
	return containerizer.RestartPolicy{
		Mode: mode, MaxRetries: int(p.GetMaxRetries()), Factor: p.GetFactor(),
		Delay: p.GetDelay().AsDuration(), MaxDelay: p.GetMaxDelay().AsDuration(), ResetAfter: p.GetResetAfter().AsDuration(),
	}
}

func restartToProto(r containerizer.RestartPolicy) *typesv1.RestartPolicy {
	if r == (containerizer.RestartPolicy{}) {
		return nil
	}
	p := &typesv1.RestartPolicy{MaxRetries: int32(min(r.MaxRetries, math.MaxInt32)), Factor: r.Factor,
		Delay: dur(r.Delay), MaxDelay: dur(r.MaxDelay), ResetAfter: dur(r.ResetAfter)}
	for m, name := range restartModes {
		if name == r.Mode {
			p.Mode = m
		}
	}
	return p
}

func dur(d time.Duration) *durationpb.Duration {
	if d == 0 {
		return nil
	}
	return durationpb.New(d)
}

func exitToProto(e *containerizer.ProcessExit) *typesv1.ProcessExit {
	if e == nil {
		return nil
	}
	return &typesv1.ProcessExit{ExitCode: e.ExitCode, State: e.State, Reason: e.Reason, Message: e.Message, Time: ts(e.Time)}
}

func exitFromProto(p *typesv1.ProcessExit) *containerizer.ProcessExit {
	if p == nil {
		return nil
	}
	return &containerizer.ProcessExit{ExitCode: p.ExitCode, State: p.GetState(), Reason: p.GetReason(), Message: p.GetMessage(), Time: fromTS(p.Time)}
}

package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/isolators"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

func TestContainerRoundTrip(t *testing.T) {
	code := int32(3)
	now := time.Date(2026, 11, 25, 6, 0, 0, 123, time.UTC)
	wd, user := "/w", "1:2"
	for _, c := range []containerizer.Container{
		{},
		{
			ID: "web", Image: "docker.io/library/busybox:latest", ImageDigest: "sha256:ab", Runtime: "runc",
			State: containerizer.TaskFailed, Reason: containerizer.ReasonCommandExited, Message: "exited with status 3",
			ExitCode: &code, Pid: 42, CreatedAt: now, StartedAt: now.Add(time.Second), FinishedAt: now.Add(2 * time.Second),
			Args: []string{"sh", "-c", "exit 3"}, Env: []string{"A=B"}, WorkingDir: wd, User: user,
			Sandbox: "/var/lib/gearbox/sandboxes/web", Labels: map[string]string{"k": "v"}, AutoRemove: true,
			Log:             containerizer.LogConfig{Driver: "logrotate", MaxSize: 65536, MaxFiles: 3, Mode: "drop"},
			LoggingDegraded: "gearbox-logger has exited", Privileged: true, Stdin: true, TTY: true,
			KillGrace: 2 * time.Second, Pull: containerizer.PullAlways,
			Resources: isolators.Resources{CPUs: 0.5, Memory: 32 << 20, MemorySoft: 16 << 20, Pids: 20, BlkioWeight: 500,
				Devices: []isolators.DeviceLimit{{Path: "/dev/vda", ReadBps: 1, WriteBps: 2, ReadIops: 3, WriteIops: 4}}},
			Network: isolators.Network{Name: "gearbox", Hostname: "web", PortMappings: []isolators.PortMapping{
				{HostPort: 31000, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 31001, ContainerPort: 53, Protocol: "udp"}}},
			IPs: []string{"10.89.0.2"},
		},
		{
			ID: "r", State: containerizer.TaskStarting, Reason: containerizer.Reason(7), Message: "restarting after an OOM kill (restart 2 of 3)",
			Restart: containerizer.RestartPolicy{Mode: containerizer.RestartOnFailure, MaxRetries: 3, Delay: time.Second, Factor: 1.5,
				MaxDelay: time.Minute, ResetAfter: 30 * time.Second},
			RestartCount: 1, NextRestartAt: now.Add(time.Minute),
			LastExit: &containerizer.ProcessExit{ExitCode: &code, State: containerizer.TaskFailed, Reason: containerizer.Reason(7), Message: "oom", Time: now},
		},
	} {
		got := containerFromProto(containerToProto(c))
		if !reflect.DeepEqual(got, c) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, c)
		}
	}
	cfg := containerizer.LaunchConfig{ID: "x", Image: "i", Entrypoint: []string{}, Cmd: []string{"a"}, Env: []string{"A=1"},
		WorkingDir: &wd, User: &user, Runtime: "runc", Labels: map[string]string{"a": "b"}, AutoRemove: true,
		Log: containerizer.LogConfig{Driver: "syslog", MaxFiles: 2}, Privileged: true, Stdin: true, TTY: true, Width: 80, Height: 24,
		KillGrace: 3 * time.Second, Pull: containerizer.PullNever, Auth: &containerizer.RegistryAuth{Username: "u", Password: "p"},
		Restart: containerizer.RestartPolicy{Mode: containerizer.RestartUnlessStopped, Delay: 2 * time.Second},
		Network: isolators.Network{Name: "none", Hostname: "h", PortMappings: []isolators.PortMapping{{ContainerPort: 8080, Protocol: "tcp"}}}}
	if got := launchFromProto(launchToProto(cfg)); !reflect.DeepEqual(got, cfg) {
		t.Errorf("launch round trip:\n got %+v\nwant %+v", got, cfg)
	}
	if got := launchFromProto(launchToProto(containerizer.LaunchConfig{ID: "x"})); got.Entrypoint != nil || got.Cmd != nil {
		t.Errorf("absent entrypoint/cmd came back as %#v / %#v", got.Entrypoint, got.Cmd)
	}
}

func TestRestartModesRoundTrip(t *testing.T) {
	for _, m := range []containerizer.RestartMode{containerizer.RestartNo, containerizer.RestartOnFailure, containerizer.RestartAlways, containerizer.RestartUnlessStopped} {
		p := containerizer.RestartPolicy{Mode: m}
		if got := restartFromProto(restartToProto(p)); got != p {
			t.Errorf("mode %s came back as %q", m, got.Mode)
		}
	}
	// A mode a newer client knows and this agent does not is kept by
	// name, so that validation refuses it naming it.
	if got := restartFromProto(&typesv1.RestartPolicy{Mode: 42}); got.Mode == "" || got.Mode == containerizer.RestartNo {
		t.Errorf("an unknown mode became %q: it would be taken for no restart policy", got.Mode)
	}
}

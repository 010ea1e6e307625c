package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/isolators"
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
			Resources: isolators.Resources{CPUs: 0.5, Memory: 32 << 20, MemorySoft: 16 << 20, Pids: 20, BlkioWeight: 500,
				Devices: []isolators.DeviceLimit{{Path: "/dev/vda", ReadBps: 1, WriteBps: 2, ReadIops: 3, WriteIops: 4}}},
			Network: isolators.Network{Name: "gearbox", Hostname: "web", PortMappings: []isolators.PortMapping{
				{HostPort: 31000, ContainerPort: 80, Protocol: "tcp"}, {HostPort: 31001, ContainerPort: 53, Protocol: "udp"}}},
			IPs: []string{"10.89.0.2"},
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
		Network: isolators.Network{Name: "none", Hostname: "h", PortMappings: []isolators.PortMapping{{ContainerPort: 8080, Protocol: "tcp"}}}}
	if got := launchFromProto(launchToProto(cfg)); !reflect.DeepEqual(got, cfg) {
		t.Errorf("launch round trip:\n got %+v\nwant %+v", got, cfg)
	}
	if got := launchFromProto(launchToProto(containerizer.LaunchConfig{ID: "x"})); got.Entrypoint != nil || got.Cmd != nil {
		t.Errorf("absent entrypoint/cmd came back as %#v / %#v", got.Entrypoint, got.Cmd)
	}
}

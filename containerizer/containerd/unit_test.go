package containerd

import (
	"bytes"
	"compress/gzip"
	"os"
	"reflect"
	"testing"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/demoimage"
)

func TestResolveArgs(t *testing.T) {
	ep, cmd := []string{"/entry"}, []string{"default"}
	for _, tc := range []struct {
		name           string
		entry, command []string
		want           []string
	}{
		{"image defaults", nil, nil, []string{"/entry", "default"}},
		{"cmd replaces cmd", nil, []string{"x"}, []string{"/entry", "x"}},
		{"entrypoint drops image cmd", []string{"/other"}, nil, []string{"/other"}},
		{"both given", []string{"/other"}, []string{"y"}, []string{"/other", "y"}},
		{"empty entrypoint clears", []string{}, []string{"sh"}, []string{"sh"}},
	} {
		if got := resolveArgs(ep, cmd, tc.entry, tc.command); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := resolveArgs(nil, nil, nil, nil); len(got) != 0 {
		t.Errorf("no entrypoint, no cmd: got %q", got)
	}
}

func TestClassifyExit(t *testing.T) {
	for _, tc := range []struct {
		code   uint32
		killed bool
		state  containerizer.TaskState
		reason containerizer.Reason
	}{
		{0, false, containerizer.TaskFinished, containerizer.ReasonCommandExited},
		{3, false, containerizer.TaskFailed, containerizer.ReasonCommandExited},
		{137, false, containerizer.TaskFailed, containerizer.ReasonCommandSignaled},
		{137, true, containerizer.TaskKilled, containerizer.ReasonTaskKilled},
		{0, true, containerizer.TaskKilled, containerizer.ReasonTaskKilled},
	} {
		s, r, msg := classifyExit(tc.code, tc.killed)
		if s != tc.state || r != tc.reason || msg == "" {
			t.Errorf("classifyExit(%d, %v) = %s %s %q", tc.code, tc.killed, s, r, msg)
		}
	}
}

func TestNormalizeRef(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":            "docker.io/library/busybox:latest",
		"team/app:1":         "docker.io/team/app:1",
		"127.0.0.1:5000/x/y": "127.0.0.1:5000/x/y:latest",
		"localhost/demo":     "localhost/demo:latest",
	} {
		if got, err := NormalizeRef(in); err != nil || got != want {
			t.Errorf("NormalizeRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "Bad//ref", "UPPERCASE", "a:b:c", "x@sha256:zz", " space"} {
		if _, err := NormalizeRef(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("NormalizeRef(%q) = %v, want InvalidArgument", bad, err)
		}
	}
}

func TestCheckArchive(t *testing.T) {
	img, err := demoimage.Build(demoimage.DefaultBusybox)
	if err != nil {
		t.Fatal(err)
	}
	var docker, oci bytes.Buffer
	if err := demoimage.WriteDockerArchive(&docker, img, "localhost/t:1"); err != nil {
		t.Fatal(err)
	}
	if err := demoimage.WriteOCILayout(&oci, img, "latest"); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(docker.Bytes())
	zw.Close()
	for name, data := range map[string][]byte{"docker": docker.Bytes(), "oci": oci.Bytes(), "gzip": gz.Bytes()} {
		if err := checkArchive(bytes.NewReader(data)); err != nil {
			t.Errorf("%s archive refused: %v", name, err)
		}
	}
	for name, data := range map[string][]byte{
		"garbage":   []byte("this is not a tar archive at all, just text that goes on for a while"),
		"truncated": docker.Bytes()[:docker.Len()/2],
		"empty":     nil,
	} {
		if err := checkArchive(bytes.NewReader(data)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s archive: got %v, want InvalidArgument", name, err)
		}
	}
}

func FuzzCheckArchive(f *testing.F) {
	f.Add([]byte("x"))
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = checkArchive(bytes.NewReader(data)) // must not panic
	})
}

// The agent's own Docker config.json supplies credentials when a pull
// brings none.
func TestConfigCreds(t *testing.T) {
	p := t.TempDir() + "/config.json"
	os.WriteFile(p, []byte(`{"auths":{"reg.example:5000":{"auth":"dXNlcjpwYXNz"},"https://index.docker.io/v1/":{"username":"hub","password":"pw"}}}`), 0o600)
	z := &Containerizer{cfg: Config{RegistryConfig: p}}
	for host, want := range map[string][2]string{
		"reg.example:5000":     {"user", "pass"},
		"registry-1.docker.io": {"hub", "pw"},
		"other:1":              {"", ""},
	} {
		u, pw, err := z.configCreds(host)
		if err != nil || u != want[0] || pw != want[1] {
			t.Errorf("configCreds(%s) = %q %q %v, want %q", host, u, pw, err, want)
		}
	}
	z.cfg.RegistryConfig = t.TempDir() + "/missing.json"
	if _, _, err := z.configCreds("x"); err == nil {
		t.Error("a missing credentials file was not reported")
	}
}

func TestCgroupDir(t *testing.T) {
	for in, want := range map[string]string{
		"/gearbox/web":              "/gearbox/web",
		"gearbox.slice:gearbox:web": "/gearbox.slice/gearbox-web.scope",
		"gearbox.slice:ns:a.b_c-1":  "/gearbox.slice/ns-a.b_c-1.scope",
	} {
		if got := CgroupDir(in); got != want {
			t.Errorf("CgroupDir(%q) = %q, want %q", in, got, want)
		}
	}
}

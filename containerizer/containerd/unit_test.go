package containerd

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
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
		if err := checkArchive(context.Background(), bytes.NewReader(data), 1<<30); err != nil {
			t.Errorf("%s archive refused: %v", name, err)
		}
	}
	for name, data := range map[string][]byte{
		"garbage":   []byte("this is not a tar archive at all, just text that goes on for a while"),
		"truncated": docker.Bytes()[:docker.Len()/2],
		"empty":     nil,
	} {
		if err := checkArchive(context.Background(), bytes.NewReader(data), 1<<30); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s archive: got %v, want InvalidArgument", name, err)
		}
	}
}

// The import's bounds: an upload over the limit is refused naming it and
// leaves no spool file; one at the limit is spooled whole.
func TestSpoolLimit(t *testing.T) {
	dir := t.TempDir()
	_, _, err := spool(context.Background(), dir, bytes.NewReader(make([]byte, 1001)), 1000)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "import_max_size") {
		t.Errorf("an upload over the limit: %v, want ResourceExhausted naming import_max_size and the limit", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a refused upload left %d file(s) in the spool directory", len(left))
	}
	f, done, err := spool(context.Background(), dir, bytes.NewReader(make([]byte, 1000)), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(f); len(b) != 1000 {
		t.Errorf("spooled %d bytes, want 1000", len(b))
	}
	done()
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a finished import left %d file(s) in the spool directory", len(left))
	}
}

// A client that hangs up mid-upload stops the spooling; nothing is left.
func TestSpoolCancelled(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{n: 3, cancel: cancel}
	_, _, err := spool(ctx, dir, r, 1<<40)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("spool after the client left: %v, want context.Canceled", err)
	}
	if r.reads > 4 {
		t.Errorf("%d reads after the cancellation", r.reads-3)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("a cancelled upload left %d file(s)", len(left))
	}
}

// cancelAfter is an endless upload whose client hangs up after n reads.
type cancelAfter struct {
	n, reads int
	cancel   func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	c.reads++
	if c.reads == c.n {
		c.cancel()
	}
	return len(p), nil
}

// A small gzip that decompresses to a lot: refused past the limit, and
// its decompression stops when the caller goes.
func TestCheckArchiveDecompressionBounds(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	tw := tar.NewWriter(zw)
	const big = 8 << 20
	tw.WriteHeader(&tar.Header{Name: "manifest.json", Mode: 0o644, Size: big})
	zeros := make([]byte, 1<<20)
	for range big / len(zeros) {
		tw.Write(zeros)
	}
	tw.Close()
	zw.Close()
	err := checkArchive(context.Background(), bytes.NewReader(gz.Bytes()), 1<<20)
	if !errdefs.IsResourceExhausted(err) || !strings.Contains(err.Error(), "decompresses to more than 1MiB") {
		t.Errorf("a %d-byte gzip of %d bytes under a 1 MiB limit: %v", gz.Len(), big, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := checkArchive(ctx, bytes.NewReader(gz.Bytes()), 1<<40); !errors.Is(err, context.Canceled) {
		t.Errorf("checking for a client that left: %v, want context.Canceled", err)
	}
	if err := checkArchive(context.Background(), bytes.NewReader(gz.Bytes()), 1<<40); err != nil {
		t.Errorf("the same archive under a large limit: %v", err)
	}
}

// Spool files an agent crash left are removed at start; nothing else is.
func TestSweepImportSpool(t *testing.T) {
	work, run := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(work, "tmp"), 0o700)
	os.MkdirAll(filepath.Join(run, "tmp"), 0o700)
	for _, p := range []string{filepath.Join(work, "tmp", "import-123.tar"), filepath.Join(run, "tmp", "import-9.tar"), filepath.Join(work, "tmp", "keep.txt")} {
		os.WriteFile(p, []byte("x"), 0o600)
	}
	if err := sweepImportSpool(Config{WorkDir: work, RunDir: run, Log: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{
		filepath.Join(work, "tmp", "import-123.tar"): false, filepath.Join(run, "tmp", "import-9.tar"): false, filepath.Join(work, "tmp", "keep.txt"): true,
	} {
		if _, err := os.Stat(p); (err == nil) != want {
			t.Errorf("%s exists: %v, want %v", p, err == nil, want)
		}
	}
	if st, err := os.Stat(filepath.Join(work, "tmp")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("spool directory: %v %v, want mode 0700", st, err)
	}
}

func FuzzCheckArchive(f *testing.F) {
	f.Add([]byte("x"))
	f.Add(make([]byte, 1024))
	f.Fuzz(func(t *testing.T, data []byte) {
		_ = checkArchive(context.Background(), bytes.NewReader(data), 1<<30) // must not panic
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

package integration

import (
	"archive/tar"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gearboxd/gearbox/internal/demoimage"
)

// writeACI writes an ACI: a gzip'd tar of manifest and rootfs/ holding
// busybox-static.
func writeACI(t *testing.T, manifest string, withRootfs bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.aci")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)
	add := func(h *tar.Header, data []byte) {
		h.Size = int64(len(data))
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	add(&tar.Header{Name: "manifest", Mode: 0o644, Typeflag: tar.TypeReg}, []byte(manifest))
	if withRootfs {
		bb, err := os.ReadFile(demoimage.DefaultBusybox)
		if err != nil {
			t.Fatalf("the ACI test needs busybox-static: %v", err)
		}
		for _, d := range []string{"rootfs/", "rootfs/bin/", "rootfs/work/"} {
			add(&tar.Header{Name: d, Mode: 0o755, Typeflag: tar.TypeDir}, nil)
		}
		add(&tar.Header{Name: "rootfs/tmp/", Mode: 0o1777, Typeflag: tar.TypeDir}, nil)
		add(&tar.Header{Name: "rootfs/bin/busybox", Mode: 0o755, Typeflag: tar.TypeReg}, bb)
		for _, l := range []string{"sh", "id", "pwd", "echo", "cat"} {
			add(&tar.Header{Name: "rootfs/bin/" + l, Linkname: "busybox", Typeflag: tar.TypeSymlink, Mode: 0o777}, nil)
		}
	}
	tw.Close()
	zw.Close()
	return p
}

const aciManifestJSON = `{
  "acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/aci-demo",
  "labels": [{"name": "version", "value": "1.0"}, {"name": "os", "value": "linux"}],
  "app": {
    "exec": ["/bin/sh", "-c", "echo \"$GREETING\"; id -u; id -g; pwd"],
    "user": "1000", "group": "1001", "workingDirectory": "/work",
    "environment": [{"name": "GREETING", "value": "hello from an ACI"}]
  }
}`

// An ACI built here imports as an OCI image named from its name and
// version, and runs with its app's command, user, group, env and dir.
func TestImportACI(t *testing.T) {
	r := h.cli("image", "import", writeACI(t, aciManifestJSON, true))
	if r.code != 0 || !strings.Contains(r.stdout, "example.com/aci-demo:1.0") {
		t.Fatalf("import ACI: %s", r)
	}
	t.Cleanup(func() { h.cli("image", "rm", "example.com/aci-demo:1.0", "localhost/aci-named:2") })
	r = h.cli("run", "--rm", "example.com/aci-demo:1.0")
	if want := "hello from an ACI\n1000\n1001\n/work\n"; r.code != 0 || r.stdout != want {
		t.Errorf("run the ACI's app: %s\nwant stdout %q", r, want)
	}
	if r := h.cli("image", "import", "--name", "localhost/aci-named:2", writeACI(t, aciManifestJSON, true)); r.code != 0 || !strings.Contains(r.stdout, "localhost/aci-named:2") {
		t.Errorf("import ACI --name: %s", r)
	}

	for name, tc := range map[string]struct {
		manifest string
		rootfs   bool
		says     string
	}{
		"not JSON":      {"{not json", true, "not JSON"},
		"wrong kind":    {`{"acKind": "PodManifest", "name": "x"}`, true, "acKind"},
		"no name":       {`{"acKind": "ImageManifest"}`, true, "no name"},
		"relative exec": {`{"acKind": "ImageManifest", "name": "x", "app": {"exec": ["sh"]}}`, true, "absolute"},
		"no rootfs":     {aciManifestJSON, false, "ACI"},
		"other os":      {`{"acKind": "ImageManifest", "name": "x", "labels": [{"name": "os", "value": "freebsd"}]}`, true, "freebsd"},
	} {
		r := h.cli("image", "import", writeACI(t, tc.manifest, tc.rootfs))
		if r.code != 125 || !strings.Contains(r.stderr, tc.says) {
			t.Errorf("%s: want a refusal saying %q: %s", name, tc.says, r)
		}
	}
}

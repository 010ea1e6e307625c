package containerd

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"slices"
	"testing"

	"github.com/containerd/errdefs"
)

func TestACIManifest(t *testing.T) {
	m, err := parseACIManifest([]byte(`{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app",
		"labels":[{"name":"version","value":"1.2"}],
		"app":{"exec":["/bin/app","-v"],"user":"100","group":"200","workingDirectory":"/srv","environment":[{"name":"A","value":"b=c"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := aciConfig(m)
	if !slices.Equal(c.Entrypoint, []string{"/bin/app", "-v"}) || c.User != "100:200" || c.WorkingDir != "/srv" || !slices.Equal(c.Env, []string{"A=b=c"}) {
		t.Errorf("config %+v", c)
	}
	for in, want := range map[importName]string{
		{}:                              "example.com/app:1.2",
		{repo: "docker.io/team/app"}:    "docker.io/team/app:1.2",
		{exact: "docker.io/team/app:9"}: "docker.io/team/app:9",
	} {
		if got, err := aciRef(m, in); err != nil || got != want {
			t.Errorf("aciRef(%+v) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{`[`, `{"acKind":"ImageManifest"}`, `{"acKind":"X","name":"a"}`,
		`{"acKind":"ImageManifest","name":"a","app":{"exec":["rel"]}}`,
		`{"acKind":"ImageManifest","name":"a","app":{"workingDirectory":"rel"}}`,
		`{"acKind":"ImageManifest","name":"a","app":{"environment":[{"name":"","value":"x"}]}}`} {
		if _, err := parseACIManifest([]byte(bad)); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: %v, want InvalidArgument", bad, err)
		}
	}
	if _, err := aciRef(&aciManifest{Name: "Not Valid"}, importName{}); !errdefs.IsInvalidArgument(err) {
		t.Errorf("an unusable name: %v, want InvalidArgument", err)
	}
}

func TestRootfsLayer(t *testing.T) {
	var in bytes.Buffer
	tw := tar.NewWriter(&in)
	for _, h := range []*tar.Header{
		{Name: "manifest", Typeflag: tar.TypeReg},
		{Name: "rootfs/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "rootfs/bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "rootfs/bin/a", Typeflag: tar.TypeReg, Mode: 0o755},
		{Name: "rootfs/bin/b", Typeflag: tar.TypeLink, Linkname: "rootfs/bin/a"},
		{Name: "rootfsx/other", Typeflag: tar.TypeReg},
	} {
		tw.WriteHeader(h)
	}
	tw.Close()
	var out bytes.Buffer
	if err := rootfsLayer(context.Background(), bytes.NewReader(in.Bytes()), &out); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&out)
	var got []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, h.Name+">"+h.Linkname)
	}
	if want := []string{"bin/>", "bin/a>", "bin/b>bin/a"}; !slices.Equal(got, want) {
		t.Errorf("layer entries %v, want %v", got, want)
	}

	var bad bytes.Buffer
	tw = tar.NewWriter(&bad)
	tw.WriteHeader(&tar.Header{Name: "rootfs/x", Typeflag: tar.TypeLink, Linkname: "../etc/shadow"})
	tw.Close()
	if err := rootfsLayer(context.Background(), bytes.NewReader(bad.Bytes()), io.Discard); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a hard link out of rootfs/: %v, want InvalidArgument", err)
	}
}

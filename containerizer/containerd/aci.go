package containerd

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"strings"

	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gearboxd/gearbox/internal/errs"
)

// AppC images (ACI): a tar, optionally compressed, holding a JSON
// "manifest" (an ImageManifest of the App Container spec) and "rootfs/".
// Import converts one to an OCI image: rootfs/ becomes its one layer, the
// app's exec, environment, user, group and working directory its config,
// its name and "version" label its reference.

// aciManifest is the part of an ImageManifest gearbox uses.
type aciManifest struct {
	ACKind    string     `json:"acKind"`
	ACVersion string     `json:"acVersion"`
	Name      string     `json:"name"`
	Labels    []aciLabel `json:"labels"`
	App       *aciApp    `json:"app"`
}

type aciLabel struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type aciApp struct {
	Exec             []string   `json:"exec"`
	User             string     `json:"user"`
	Group            string     `json:"group"`
	WorkingDirectory string     `json:"workingDirectory"`
	Environment      []aciLabel `json:"environment"`
}

func (m *aciManifest) label(n string) string {
	for _, l := range m.Labels {
		if l.Name == n {
			return l.Value
		}
	}
	return ""
}

func aciInvalid(format string, a ...any) error {
	return errs.New(errdefs.ErrInvalidArgument, "not a valid ACI: "+format, a...)
}

// parseACIManifest checks what the conversion relies on.
func parseACIManifest(b []byte) (*aciManifest, error) {
	var m aciManifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, aciInvalid("its manifest is not JSON: %v", err)
	}
	if m.ACKind != "ImageManifest" {
		return nil, aciInvalid("its manifest's acKind is %q, not ImageManifest", m.ACKind)
	}
	if m.Name == "" {
		return nil, aciInvalid("its manifest has no name")
	}
	if os := m.label("os"); os != "" && os != "linux" {
		return nil, aciInvalid("it is built for os %q; this agent runs linux", os)
	}
	if a := m.App; a != nil {
		if len(a.Exec) > 0 && !path.IsAbs(a.Exec[0]) {
			return nil, aciInvalid("app.exec[0] %q is not an absolute path", a.Exec[0])
		}
		if a.WorkingDirectory != "" && !path.IsAbs(a.WorkingDirectory) {
			return nil, aciInvalid("app.workingDirectory %q is not an absolute path", a.WorkingDirectory)
		}
		for _, e := range a.Environment {
			if e.Name == "" || strings.Contains(e.Name, "=") {
				return nil, aciInvalid("app.environment has a bad name %q", e.Name)
			}
		}
	}
	return &m, nil
}

// aciRef is the image's reference: its name and version label (latest
// without one), unless the import's --name says otherwise.
func aciRef(m *aciManifest, in importName) (string, error) {
	switch {
	case in.exact != "":
		return in.exact, nil
	case in.repo != "":
		return in.repo + ":" + aciTag(m), nil
	}
	full, err := reference.ParseNormalizedNamed(m.Name + ":" + aciTag(m))
	if err != nil {
		return "", aciInvalid("its name %q and version %q make no image reference (%v): import it with --name REPO:TAG", m.Name, m.label("version"), err)
	}
	return full.String(), nil
}

func aciTag(m *aciManifest) string {
	if v := m.label("version"); v != "" {
		return v
	}
	return "latest"
}

// aciConfig is the OCI config of the app.
func aciConfig(m *aciManifest) v1.Config {
	var c v1.Config
	a := m.App
	if a == nil {
		return c
	}
	c.Entrypoint = a.Exec
	c.WorkingDir = a.WorkingDirectory
	c.User = a.User
	if a.Group != "" && a.User != "" {
		c.User += ":" + a.Group
	}
	for _, e := range a.Environment {
		c.Env = append(c.Env, e.Name+"="+e.Value)
	}
	return c
}

// convertACI turns the ACI f into a docker-archive of an OCI image named
// as aciRef says (and makes in name exactly that), spooled in the work
// dir; cleanup removes the spool.
func (z *Containerizer) convertACI(ctx context.Context, f io.ReadSeeker, manifest []byte, in *importName) (io.Reader, func(), error) {
	m, err := parseACIManifest(manifest)
	if err != nil {
		return nil, nil, err
	}
	ref, err := aciRef(m, *in)
	if err != nil {
		return nil, nil, err
	}
	var files []string
	cleanup := func() {
		for _, p := range files {
			os.Remove(p)
		}
	}
	temp := func() (*os.File, error) {
		t, err := os.CreateTemp(spoolDir(z.cfg.WorkDir), spoolPattern)
		if err == nil {
			files = append(files, t.Name())
		}
		return t, err
	}
	out, err := z.buildACI(ctx, f, m, ref, temp)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	in.exact, in.repo = ref, ""
	return out, cleanup, nil
}

func (z *Containerizer) buildACI(ctx context.Context, f io.ReadSeeker, m *aciManifest, ref string, temp func() (*os.File, error)) (io.Reader, error) {
	lt, err := temp()
	if err != nil {
		return nil, err
	}
	defer lt.Close()
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := rootfsLayer(ctx, f, lt); err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromFile(lt.Name(), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("converting the ACI's rootfs: %w", err)
	}
	arch := m.label("arch")
	if arch == "" {
		arch = runtime.GOARCH
	}
	img, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: aciArch(arch), Config: aciConfig(m),
		RootFS: v1.RootFS{Type: "layers"}})
	if err != nil {
		return nil, fmt.Errorf("converting the ACI: %w", err)
	}
	if img, err = mutate.AppendLayers(img, layer); err != nil {
		return nil, fmt.Errorf("converting the ACI: %w", err)
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return nil, aciInvalid("name %q: %v", ref, err)
	}
	out, err := temp()
	if err != nil {
		return nil, err
	}
	if err := tarball.Write(tag, img, out); err != nil {
		out.Close()
		return nil, fmt.Errorf("converting the ACI: %w", err)
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		out.Close()
		return nil, err
	}
	return out, nil
}

// aciArch maps appc's architecture names to OCI's.
func aciArch(a string) string {
	switch a {
	case "aarch64":
		return "arm64"
	case "i386":
		return "386"
	}
	return a
}

// rootfsLayer copies the entries under rootfs/ of the ACI r into a plain
// tar at w, with rootfs/ taken off their names. An entry that would land
// outside the root is refused.
func rootfsLayer(ctx context.Context, r io.Reader, w io.Writer) error {
	dr, err := compression.DecompressStream(ctxReader{ctx, r})
	if err != nil {
		return aciInvalid("%v", err)
	}
	defer dr.Close()
	tr := tar.NewReader(dr)
	tw := tar.NewWriter(w)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return aciInvalid("reading it: %v", err)
		}
		rel, ok := strings.CutPrefix(path.Clean(strings.TrimPrefix(h.Name, "./")), "rootfs")
		if !ok || (rel != "" && rel[0] != '/') {
			continue // manifest, or not under rootfs/
		}
		rel = strings.TrimPrefix(rel, "/")
		if rel == "" {
			continue
		}
		if strings.HasPrefix(rel, "../") || (h.Typeflag == tar.TypeLink && !strings.HasPrefix(path.Clean(strings.TrimPrefix(h.Linkname, "./")), "rootfs/")) {
			return aciInvalid("entry %q points outside rootfs/", h.Name)
		}
		h.Name = rel
		if h.Typeflag == tar.TypeDir {
			h.Name += "/"
		}
		if h.Typeflag == tar.TypeLink {
			h.Linkname = strings.TrimPrefix(path.Clean(strings.TrimPrefix(h.Linkname, "./")), "rootfs/")
		}
		if err := tw.WriteHeader(h); err != nil {
			return fmt.Errorf("converting the ACI's rootfs: %w", err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return aciInvalid("reading %s: %v", h.Name, err)
		}
	}
	return tw.Close()
}

// Package demoimage builds a small image locally from Debian's
// busybox-static, with no registry: gearbox dev imports it as the demo image
// and the integration tests run it, push it and import it.
//
// It has two layers: busybox with its applets, /etc/passwd and /etc/group;
// then a layer that deletes /etc/whiteout-me with a whiteout and adds
// /etc/gearbox-demo. A correct unpack shows the second and not the first.
package demoimage

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// DefaultBusybox is where Debian's busybox-static puts its binary.
const DefaultBusybox = "/bin/busybox"

// Name is the demo image's reference.
const Name = "localhost/demo:latest"

// ErrNoBusybox says how to get what is missing.
var ErrNoBusybox = errors.New("a static busybox is needed to build the demo image: apt-get install busybox-static")

// Build makes the image from the busybox binary at path.
func Build(path string) (v1.Image, error) {
	if err := checkStatic(path); err != nil {
		return nil, err
	}
	bb, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w (%v)", ErrNoBusybox, err)
	}
	out, err := exec.Command(path, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets: %w", err)
	}
	var base tarBuilder
	base.dir("bin")
	base.dir("sbin")
	base.dir("usr")
	base.dir("usr/bin")
	base.dir("usr/sbin")
	base.dir("etc")
	base.dir("tmp", 0o1777)
	base.dir("root", 0o700)
	base.file("bin/busybox", bb, 0o755)
	for _, applet := range strings.Fields(string(out)) {
		if applet == "bin/busybox" {
			continue
		}
		base.symlink(applet, "/bin/busybox")
	}
	base.file("etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644)
	base.file("etc/group", []byte("root:x:0:\nnogroup:x:65534:\n"), 0o644)
	base.file("etc/whiteout-me", []byte("deleted by the second layer\n"), 0o644)

	var top tarBuilder
	top.dir("etc")
	top.file("etc/.wh.whiteout-me", nil, 0o644)
	top.file("etc/gearbox-demo", []byte("built by gearbox from busybox-static\n"), 0o644)

	img := empty.Image
	for _, b := range []*tarBuilder{&base, &top} {
		data, err := b.bytes()
		if err != nil {
			return nil, err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
		if err != nil {
			return nil, err
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = runtime.GOARCH, "linux"
	cf.Created = v1.Time{Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	cf.Config.Cmd = []string{"sh"}
	cf.Config.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	cf.Config.WorkingDir = "/"
	return mutate.ConfigFile(img, cf)
}

// WriteDockerArchive writes img as `docker save` does, tagged ref.
func WriteDockerArchive(w io.Writer, img v1.Image, ref string) error {
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}
	return tarball.Write(tag, img, w)
}

// WriteOCILayout writes img as an OCI layout tar whose index names it only
// by the tag refName (as many tools do: "latest").
func WriteOCILayout(w io.Writer, img v1.Image, refName string) error {
	dir, err := os.MkdirTemp("", "gearbox-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": refName})); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	err = filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = rel
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%w (%s: %v)", ErrNoBusybox, path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%w (%s is dynamically linked)", ErrNoBusybox, path)
		}
	}
	return nil
}

type tarBuilder struct {
	buf bytes.Buffer
	tw  *tar.Writer
	err error
}

func (b *tarBuilder) w() *tar.Writer {
	if b.tw == nil {
		b.tw = tar.NewWriter(&b.buf)
	}
	return b.tw
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (b *tarBuilder) dir(name string, mode ...int64) {
	m := int64(0o755)
	if len(mode) > 0 {
		m = mode[0]
	}
	b.add(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: m, ModTime: epoch}, nil)
}

func (b *tarBuilder) file(name string, data []byte, mode int64) {
	b.add(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch}, data)
}

func (b *tarBuilder) symlink(name, target string) {
	b.add(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: epoch}, nil)
}

func (b *tarBuilder) add(h *tar.Header, data []byte) {
	if b.err != nil {
		return
	}
	if b.err = b.w().WriteHeader(h); b.err == nil && data != nil {
		_, b.err = b.tw.Write(data)
	}
}

func (b *tarBuilder) bytes() ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	if err := b.w().Close(); err != nil {
		return nil, err
	}
	return b.buf.Bytes(), nil
}

package containerd

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/images/archive"
	"github.com/containerd/containerd/v2/core/remotes"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	remoteerrors "github.com/containerd/containerd/v2/core/remotes/errors"
	"github.com/containerd/containerd/v2/pkg/archive/compression"
	"github.com/containerd/errdefs"
	"github.com/containerd/platforms"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// plainHTTP says whether a registry host is spoken to without TLS: loopback
// ones always, others when the agent's config lists them as insecure.
func (z *Containerizer) plainHTTP(host string) (bool, error) {
	if ok, _ := docker.MatchLocalhost(host); ok {
		return true, nil
	}
	return slices.Contains(z.cfg.InsecureRegistries, host), nil
}

func (z *Containerizer) resolver(auth *containerizer.RegistryAuth) remotes.Resolver {
	creds := func(host string) (string, string, error) {
		if auth != nil {
			if auth.IdentityToken != "" {
				return "", auth.IdentityToken, nil
			}
			return auth.Username, auth.Password, nil
		}
		return z.configCreds(host)
	}
	authorizer := docker.NewDockerAuthorizer(docker.WithAuthCreds(creds))
	hosts := docker.ConfigureDefaultRegistries(
		docker.WithAuthorizer(authorizer),
		docker.WithPlainHTTP(z.plainHTTP),
	)
	return docker.NewResolver(docker.ResolverOptions{Hosts: hosts})
}

// configCreds reads the credentials for host from the Docker config.json
// the agent's config names (credential helpers included).
func (z *Containerizer) configCreds(host string) (string, string, error) {
	if z.cfg.RegistryConfig == "" {
		return "", "", nil
	}
	f, err := os.Open(z.cfg.RegistryConfig)
	if err != nil {
		return "", "", fmt.Errorf("reading registry credentials: %w", err)
	}
	defer f.Close()
	cf, err := dockerconfig.LoadFromReader(f)
	if err != nil {
		return "", "", fmt.Errorf("reading registry credentials from %s: %w", z.cfg.RegistryConfig, err)
	}
	key := host
	if host == "registry-1.docker.io" || host == "docker.io" {
		key = "https://index.docker.io/v1/"
	}
	ac, err := cf.GetAuthConfig(key)
	if err != nil {
		return "", "", err
	}
	if ac.IdentityToken != "" {
		return "", ac.IdentityToken, nil
	}
	return ac.Username, ac.Password, nil
}

// registryError turns a registry failure into an error class and a message
// that names the host.
func registryError(ref string, err error) error {
	host := refHost(ref)
	var unexpected remoteerrors.ErrUnexpectedStatus
	var netErr net.Error
	var opErr *net.OpError
	switch {
	case errdefs.IsNotFound(err):
		return errs.New(errdefs.ErrNotFound, "image %q not found in registry %s: check the name and tag", ref, host)
	case errors.As(err, &unexpected) && (unexpected.StatusCode == 401 || unexpected.StatusCode == 403),
		errors.Is(err, docker.ErrInvalidAuthorization):
		return errs.New(errdefs.ErrPermissionDenied, "registry %s refused the credentials for %q: check them (docker login %s writes them to ~/.docker/config.json): %v", host, ref, host, err)
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &opErr), errors.As(err, &netErr):
		return errs.New(errdefs.ErrUnavailable, "cannot reach registry %s: %v", host, err)
	}
	return fmt.Errorf("pulling %q from %s: %w", ref, host, err)
}

func refHost(ref string) string {
	host, _, _ := strings.Cut(ref, "/")
	if host == "docker.io" {
		return "registry-1.docker.io"
	}
	return host
}

func (z *Containerizer) Pull(ctx context.Context, ref string, auth *containerizer.RegistryAuth, progress func(containerizer.PullProgress)) (containerizer.Image, error) {
	full, err := NormalizeRef(ref)
	if err != nil {
		return containerizer.Image{}, err
	}
	if progress == nil {
		progress = func(containerizer.PullProgress) {}
	}
	pt := newPullTracker(z.client.ContentStore(), progress)
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); pt.run(pctx) }()
	img, err := z.client.Pull(ctx, full,
		client.WithResolver(z.resolver(auth)),
		client.WithPullUnpack,
		client.WithPullSnapshotter(z.cfg.Snapshotter),
		client.WithImageHandlerWrapper(pt.wrap),
	)
	stop()
	wg.Wait()
	if err != nil {
		return containerizer.Image{}, registryError(full, err)
	}
	pt.finish(ctx)
	return z.describe(ctx, img.Metadata())
}

// pullTracker reports per-layer progress by watching the content store's
// in-flight writes, as ctr does.
type pullTracker struct {
	cs       content.Store
	progress func(containerizer.PullProgress)
	mu       sync.Mutex
	layers   []ocispec.Descriptor
	last     map[digest.Digest]containerizer.PullProgress
}

func newPullTracker(cs content.Store, fn func(containerizer.PullProgress)) *pullTracker {
	return &pullTracker{cs: cs, progress: fn, last: map[digest.Digest]containerizer.PullProgress{}}
}

// wrap records the layers a manifest names. It wraps the fetch chain rather
// than joining it because the unpacker fetches layers itself: a handler in
// the chain never sees them.
func (p *pullTracker) wrap(h images.Handler) images.Handler {
	return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
		children, err := h.Handle(ctx, desc)
		p.mu.Lock()
		for _, c := range children {
			if images.IsLayerType(c.MediaType) && !slices.ContainsFunc(p.layers, func(l ocispec.Descriptor) bool { return l.Digest == c.Digest }) {
				p.layers = append(p.layers, c)
			}
		}
		p.mu.Unlock()
		return children, err
	})
}

func (p *pullTracker) run(ctx context.Context) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		p.poll(ctx, false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (p *pullTracker) finish(ctx context.Context) { p.poll(ctx, true) }

func (p *pullTracker) poll(ctx context.Context, final bool) {
	statuses, _ := p.cs.ListStatuses(ctx, "")
	active := map[string]content.Status{}
	for _, s := range statuses {
		active[s.Ref] = s
	}
	p.mu.Lock()
	layers := slices.Clone(p.layers)
	p.mu.Unlock()
	for _, l := range layers {
		pr := containerizer.PullProgress{Digest: l.Digest.String(), MediaType: l.MediaType, Total: l.Size}
		prev, seen := p.last[l.Digest]
		if s, ok := active[remotes.MakeRefKey(ctx, l)]; ok {
			pr.Status, pr.Offset = "downloading", s.Offset
			if s.Total > 0 {
				pr.Total = s.Total
			}
		} else if _, err := p.cs.Info(ctx, l.Digest); err == nil {
			pr.Status, pr.Offset = "done", l.Size
			if !seen || prev.Status == "exists" {
				pr.Status = "exists"
			}
		} else {
			pr.Status = "waiting"
		}
		if final && pr.Status != "exists" {
			pr.Status, pr.Offset = "done", l.Size
		}
		if seen && prev == pr {
			continue
		}
		p.last[l.Digest] = pr
		p.progress(pr)
	}
}

// checkArchive reads a whole tar (gzip allowed) and says whether it is a
// docker-archive or an OCI layout; a truncated or foreign file is refused
// before anything is imported.
func checkArchive(r io.Reader) error {
	dr, err := compression.DecompressStream(r)
	if err != nil {
		return errs.New(errdefs.ErrInvalidArgument, "cannot read the archive: %v", err)
	}
	defer dr.Close()
	tr := tar.NewReader(dr)
	var docker, oci bool
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if n == 0 {
				return errs.New(errdefs.ErrInvalidArgument, "not a tar archive (%v): give a docker-archive (docker save) or an OCI layout tar", err)
			}
			return errs.New(errdefs.ErrInvalidArgument, "the archive is truncated or corrupt after %d entries: %v", n, err)
		}
		n++
		switch path.Clean(h.Name) {
		case "manifest.json":
			docker = true
		case "index.json", "oci-layout":
			oci = true
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return errs.New(errdefs.ErrInvalidArgument, "the archive is truncated or corrupt in %s: %v", h.Name, err)
		}
	}
	if !docker && !oci {
		return errs.New(errdefs.ErrInvalidArgument, "the archive is neither a docker-archive (no manifest.json) nor an OCI layout (no index.json)")
	}
	return nil
}

func (z *Containerizer) Import(ctx context.Context, r io.Reader, name string) ([]containerizer.Image, error) {
	if name != "" {
		full, err := NormalizeRef(name)
		if err != nil {
			return nil, err
		}
		// AddRefPrefix wants a name without tag: "latest" → name:latest.
		if i := strings.LastIndex(full, ":"); i > strings.LastIndex(full, "/") {
			full = full[:i]
		}
		name = full
	}
	// Spool the upload: the archive is checked whole before anything is
	// imported, and import needs to read it again.
	f, err := os.CreateTemp(z.cfg.RunDir+"/tmp", "import-*.tar")
	if err != nil {
		return nil, fmt.Errorf("spooling the import: %w", err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	if _, err := io.Copy(f, r); err != nil {
		return nil, fmt.Errorf("receiving the archive: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := checkArchive(f); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var opts []client.ImportOpt
	if name != "" {
		// Tags in the archive ("latest") become name:tag; an image the
		// archive does not name at all becomes name@digest.
		opts = append(opts, client.WithImageRefTranslator(archive.AddRefPrefix(name)),
			client.WithDigestRef(func(d digest.Digest) string { return name + "@" + d.String() }),
			client.WithSkipDigestRef(func(imageName string) bool { return imageName != "" }))
	}
	imgs, err := z.client.Import(ctx, f, opts...)
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "importing the archive: %v", err)
	}
	if len(imgs) == 0 {
		return nil, errs.WithInfo(errs.New(errdefs.ErrInvalidArgument, "the archive names no image, and the import gives no name"), typesv1.ErrorReasonImageUnnamed)
	}
	var out []containerizer.Image
	for _, im := range imgs {
		img := client.NewImageWithPlatform(z.client, im, platforms.Default())
		if err := img.Unpack(ctx, z.cfg.Snapshotter); err != nil {
			return nil, fmt.Errorf("unpacking imported image %s: %w", im.Name, err)
		}
		d, err := z.describe(ctx, im)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

func (z *Containerizer) describe(ctx context.Context, im images.Image) (containerizer.Image, error) {
	size, err := im.Size(ctx, z.client.ContentStore(), platforms.Default())
	if err != nil {
		size = 0
	}
	return containerizer.Image{Name: im.Name, Digest: im.Target.Digest.String(), Size: size, CreatedAt: im.CreatedAt.UTC()}, nil
}

func (z *Containerizer) Images(ctx context.Context) ([]containerizer.Image, error) {
	list, err := z.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	out := make([]containerizer.Image, 0, len(list))
	for _, im := range list {
		d, _ := z.describe(ctx, im)
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (z *Containerizer) RemoveImage(ctx context.Context, ref string, force bool) error {
	full, err := NormalizeRef(ref)
	if err != nil {
		return err
	}
	if !force {
		var users []string
		z.mu.Lock()
		for id, c := range z.containers {
			if c.snapshot().Image == full {
				users = append(users, string(id))
			}
		}
		z.mu.Unlock()
		if len(users) > 0 {
			sort.Strings(users)
			return errs.WithInfo(errs.New(errdefs.ErrFailedPrecondition, "image %q is used by container(s) %s", full, strings.Join(users, ", ")),
				typesv1.ErrorReasonImageInUse, "image", ref)
		}
	}
	err = z.client.ImageService().Delete(ctx, full, images.SynchronousDelete())
	if errdefs.IsNotFound(err) {
		return errs.WithInfo(errs.New(errdefs.ErrNotFound, "image %q is not present on this agent", full), typesv1.ErrorReasonImageNotFound, "image", ref)
	}
	if err != nil {
		return fmt.Errorf("removing image %q: %w", full, err)
	}
	return nil
}

package containerd

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
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
	"github.com/distribution/reference"
	dockerconfig "github.com/docker/cli/cli/config"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/units"
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

// Imports are spooled, because the archive is checked whole before
// anything is imported and import reads it again. The spool lives on the
// work dir's disk (work_dir/tmp/import-*), not in run_dir: /run is a tmpfs,
// and a big archive there eats the host's memory. Two bounds keep it from
// filling the disk: an archive may hold at most ImportMaxSize bytes, as
// received and once decompressed (so the content store gets no more than
// that either), and at most MaxImports run at once.
//
// An import beyond MaxImports is refused at once (ResourceExhausted), not
// queued: a queued import would either spool while it waits, which the cap
// is there to prevent, or hold its client's upload still, with nothing to
// tell it why or for how long. A refusal says which limit and what to do,
// and the CLI's user can retry. Every spool file is removed when its import
// ends, however it ends; one that an agent crash left behind is removed at
// the next start (sweepImportSpool). A client that hangs up stops the
// import: the upload's reads fail, and checking and decompressing read
// through the call's context.
const spoolPattern = "import-*.tar"

// DefaultImportMaxSize and DefaultMaxImports apply when the config sets 0.
const (
	DefaultImportMaxSize = 4 << 30
	DefaultMaxImports    = 2
)

func (z *Containerizer) importMaxSize() int64 {
	if z.cfg.ImportMaxSize > 0 {
		return z.cfg.ImportMaxSize
	}
	return DefaultImportMaxSize
}

// spoolDir is where imports spool: work_dir/tmp, root's alone.
func spoolDir(workDir string) string { return filepath.Join(workDir, "tmp") }

// sweepImportSpool creates the spool directory and removes the spool files
// that an agent which crashed during an import left there (and in
// run_dir/tmp, where spools lived before).
func sweepImportSpool(cfg Config) error {
	dir := spoolDir(cfg.WorkDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	for _, d := range []string{dir, filepath.Join(cfg.RunDir, "tmp")} {
		left, _ := filepath.Glob(filepath.Join(d, spoolPattern))
		for _, p := range left {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("removing an interrupted import's spool file: %w", err)
			}
			cfg.Log.Info("removed the spool file of an import an earlier agent did not finish", "path", p)
		}
	}
	return nil
}

// ctxReader fails its reads once ctx ends, so that a copy or a
// decompression reading through it stops when the caller goes.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func tooLarge(limit int64, what string) error {
	return errs.New(errdefs.ErrResourceExhausted, "the archive %s more than %s, this agent's import limit (config key import_max_size): "+
		"import a smaller archive (one image per archive), or raise import_max_size in the agent's config", what, units.FormatSize(limit))
}

// spool copies an upload into a new file of dir, refusing one larger than
// limit. The file is positioned at its start; done closes and removes it.
// On error nothing is left in dir.
func spool(ctx context.Context, dir string, r io.Reader, limit int64) (*os.File, func(), error) {
	f, err := os.CreateTemp(dir, spoolPattern)
	if err != nil {
		return nil, nil, fmt.Errorf("spooling the import in %s: %w", dir, err)
	}
	done := func() {
		f.Close()
		os.Remove(f.Name())
	}
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, limit+1))
	switch {
	case ctx.Err() != nil:
		err = fmt.Errorf("receiving the archive: the client went away: %w", ctx.Err())
	case err != nil:
		err = fmt.Errorf("receiving the archive: %w", err)
	case n > limit:
		err = tooLarge(limit, "holds")
	default:
		_, err = f.Seek(0, io.SeekStart)
	}
	if err != nil {
		done()
		return nil, nil, err
	}
	return f, done, nil
}

// countingReader counts what it reads and fails past a limit.
type countingReader struct {
	r     io.Reader
	n     int64
	limit int64
}

var errDecompressedTooLarge = errors.New("decompressed archive too large")

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if c.n > c.limit {
		return n, errDecompressedTooLarge
	}
	return n, err
}

// archiveInfo is what inspectArchive learnt of an archive.
type archiveInfo struct {
	kind archiveKind
	// images is how many images the archive names at its top (the
	// manifests of index.json, else the entries of manifest.json).
	images int
	// aciManifest is an ACI's manifest file.
	aciManifest []byte
}

type archiveKind int

const (
	archiveDocker archiveKind = iota + 1
	archiveOCI
	archiveACI
)

// maxArchiveIndex bounds the index files inspectArchive keeps to parse.
const maxArchiveIndex = 4 << 20

// checkArchive reads a whole tar (gzip allowed) and says whether it is a
// docker-archive, an OCI layout or an ACI; a truncated or foreign file, or
// one that decompresses to more than limit bytes, is refused before
// anything is imported. It stops when ctx ends, also in the middle of
// decompressing.
func checkArchive(ctx context.Context, r io.Reader, limit int64) error {
	_, err := inspectArchive(ctx, r, limit)
	return err
}

// inspectArchive is checkArchive, also saying what the archive holds.
func inspectArchive(ctx context.Context, r io.Reader, limit int64) (archiveInfo, error) {
	var info archiveInfo
	dr, err := compression.DecompressStream(ctxReader{ctx, r})
	if cerr := ctx.Err(); cerr != nil {
		return info, cerr
	}
	if err != nil {
		return info, errs.New(errdefs.ErrInvalidArgument, "cannot read the archive: %v", err)
	}
	defer dr.Close()
	tr := tar.NewReader(&countingReader{r: ctxReader{ctx, dr}, limit: limit})
	files := map[string][]byte{}
	var rootfs bool
	n := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err == nil {
			err = keepIndexFile(tr, h, files)
		}
		if cerr := ctx.Err(); cerr != nil {
			return info, cerr
		}
		if err != nil {
			return info, archiveErr(err, n, h, limit)
		}
		n++
		if c := path.Clean(h.Name); c == "rootfs" || strings.HasPrefix(c, "rootfs/") {
			rootfs = true
		}
	}
	return classifyArchive(files, rootfs)
}

// keepIndexFile reads the current entry, keeping the files that say what
// the archive is (manifest.json, index.json, oci-layout, manifest).
func keepIndexFile(tr *tar.Reader, h *tar.Header, files map[string][]byte) error {
	switch c := path.Clean(h.Name); c {
	case "manifest.json", "index.json", "oci-layout", "manifest":
		if h.Typeflag != tar.TypeReg {
			break
		}
		b, err := io.ReadAll(io.LimitReader(tr, maxArchiveIndex+1))
		if err != nil {
			return err
		}
		if len(b) > maxArchiveIndex {
			b = []byte{} // present, too large to parse: counts no image
		}
		files[c] = b
	}
	_, err := io.Copy(io.Discard, tr)
	return err
}

func archiveErr(err error, n int, h *tar.Header, limit int64) error {
	switch {
	case errdefs.IsInvalidArgument(err):
		return err
	case errors.Is(err, errDecompressedTooLarge):
		return tooLarge(limit, "decompresses to")
	case n == 0 && h == nil:
		return errs.New(errdefs.ErrInvalidArgument, "not a tar archive (%v): give a docker-archive (docker save), an OCI layout tar or an ACI", err)
	case h == nil:
		return errs.New(errdefs.ErrInvalidArgument, "the archive is truncated or corrupt after %d entries: %v", n, err)
	}
	return errs.New(errdefs.ErrInvalidArgument, "the archive is truncated or corrupt in %s: %v", h.Name, err)
}

func classifyArchive(files map[string][]byte, rootfs bool) (archiveInfo, error) {
	var info archiveInfo
	_, hasIndex := files["index.json"]
	_, hasLayout := files["oci-layout"]
	switch {
	case hasIndex || hasLayout:
		info.kind = archiveOCI
		var idx struct {
			Manifests []json.RawMessage `json:"manifests"`
		}
		if json.Unmarshal(files["index.json"], &idx) == nil {
			info.images = len(idx.Manifests)
		}
	case files["manifest.json"] != nil:
		// docker save
		info.kind = archiveDocker
		var m []json.RawMessage
		if json.Unmarshal(files["manifest.json"], &m) == nil {
			info.images = len(m)
		}
	case files["manifest"] != nil && rootfs:
		info.kind, info.images, info.aciManifest = archiveACI, 1, files["manifest"]
	default:
		return info, errs.New(errdefs.ErrInvalidArgument, "the archive is neither a docker-archive (no manifest.json), an OCI layout (no index.json) nor an ACI (no manifest and rootfs/)")
	}
	return info, nil
}

// importName is what an import's --name asks for.
type importName struct {
	// repo: the archive's tags are kept, under this repository
	// (name:latest for an OCI layout tagged "latest"); name@digest for an
	// image the archive does not name.
	repo string
	// exact: the one image of the archive gets exactly this name.
	exact string
	// familiar is exact's repository as the user writes it.
	familiar string
}

// parseImportName reads --name: REPO keeps the archive's tags under REPO,
// REPO:TAG names the archive's one image exactly so.
func parseImportName(name string) (importName, error) {
	if name == "" {
		return importName{}, nil
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return importName{}, errs.New(errdefs.ErrInvalidArgument, "name %q is malformed: %v (expected REPO or REPO:TAG, e.g. team/tool:1.2)", name, err)
	}
	if _, ok := named.(reference.Digested); ok {
		return importName{}, errs.New(errdefs.ErrInvalidArgument, "name %q holds a digest: give REPO or REPO:TAG (the digest is the archive's)", name)
	}
	if reference.IsNameOnly(named) {
		return importName{repo: named.Name()}, nil
	}
	return importName{exact: named.String(), familiar: reference.FamiliarName(named)}, nil
}

func (n importName) opts() []client.ImportOpt {
	switch {
	case n.exact != "":
		// Whatever the archive calls its image, it gets this name.
		return []client.ImportOpt{client.WithImageRefTranslator(func(string) string { return n.exact }),
			client.WithDigestRef(func(digest.Digest) string { return n.exact }),
			client.WithSkipDigestRef(func(imageName string) bool { return imageName != "" })}
	case n.repo != "":
		// Tags in the archive ("latest") become repo:tag; an image the
		// archive does not name at all becomes repo@digest.
		return []client.ImportOpt{client.WithImageRefTranslator(archive.AddRefPrefix(n.repo)),
			client.WithDigestRef(func(d digest.Digest) string { return n.repo + "@" + d.String() }),
			client.WithSkipDigestRef(func(imageName string) bool { return imageName != "" })}
	}
	return nil
}

// Import spools the archive (see spoolPattern), checks it and imports its
// images. The spool is removed however the import ends.
func (z *Containerizer) Import(ctx context.Context, r io.Reader, name string) ([]containerizer.Image, error) {
	in, err := parseImportName(name)
	if err != nil {
		return nil, err
	}
	select {
	case z.importSlots <- struct{}{}:
		defer func() { <-z.importSlots }()
	default:
		return nil, errs.New(errdefs.ErrResourceExhausted, "this agent runs at most %d image import(s) at once (config key max_imports) and that many are under way: "+
			"retry when one has finished, or raise max_imports in the agent's config", cap(z.importSlots))
	}
	limit := z.importMaxSize()
	f, done, err := spool(ctx, spoolDir(z.cfg.WorkDir), r, limit)
	if err != nil {
		return nil, err
	}
	defer done()
	info, err := inspectArchive(ctx, f, limit)
	if err != nil {
		return nil, err
	}
	if in.exact != "" && info.images > 1 {
		return nil, errs.New(errdefs.ErrInvalidArgument, "the archive holds %d images and --name %s names one: give only a repository (--name %s) to keep each image's tag under it",
			info.images, name, in.familiar)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var src io.Reader = ctxReader{ctx, f}
	if info.kind == archiveACI {
		conv, cleanup, err := z.convertACI(ctx, f, info.aciManifest, &in)
		if err != nil {
			return nil, err
		}
		defer cleanup()
		src = ctxReader{ctx, conv}
	}
	imgs, err := z.client.Import(ctx, src, in.opts()...)
	if cerr := ctx.Err(); cerr != nil {
		return nil, fmt.Errorf("importing the archive: %w", cerr)
	}
	if err != nil {
		return nil, errs.New(errdefs.ErrInvalidArgument, "importing the archive: %v", err)
	}
	if len(imgs) == 0 {
		return nil, errs.WithInfo(errs.New(errdefs.ErrInvalidArgument, "the archive names no image, and the import gives no name"), typesv1.ErrorReasonImageUnnamed)
	}
	return z.unpackImported(ctx, imgs)
}

func (z *Containerizer) unpackImported(ctx context.Context, imgs []images.Image) ([]containerizer.Image, error) {
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

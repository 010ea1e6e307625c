package containerd

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/containerd/containerd/v2/core/content"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// labelLastUsed, on an image in containerd, is when a container was last
// launched from it (RFC 3339). It lives in containerd, so it survives the
// agent; an image without it counts as used when it was last updated
// (pulled, imported or tagged).
const labelLastUsed = "gearbox.last_used"

// touchImage records that a container is being launched from ref. A
// failure only makes the image look older to the image GC: it is logged.
func (z *Containerizer) touchImage(ctx context.Context, ref string) {
	_, err := z.client.ImageService().Update(ctx, images.Image{Name: ref,
		Labels: map[string]string{labelLastUsed: time.Now().UTC().Format(time.RFC3339Nano)}}, "labels."+labelLastUsed)
	if err != nil {
		z.log.Warn("recording an image's last use", "image", ref, "err", err)
	}
}

// lastUsed is when im was last used (see labelLastUsed).
func lastUsed(im images.Image) time.Time {
	if t, err := time.Parse(time.RFC3339Nano, im.Labels[labelLastUsed]); err == nil && t.After(im.UpdatedAt) {
		return t
	}
	return im.UpdatedAt
}

// Tag gives the image src the further name dst, as docker tag.
func (z *Containerizer) Tag(ctx context.Context, src, dst string) (containerizer.Image, error) {
	from, err := NormalizeRef(src)
	if err != nil {
		return containerizer.Image{}, err
	}
	to, err := NormalizeRef(dst)
	if err != nil {
		return containerizer.Image{}, err
	}
	is := z.client.ImageService()
	im, err := is.Get(ctx, from)
	if errdefs.IsNotFound(err) {
		return containerizer.Image{}, errs.WithInfo(errs.New(errdefs.ErrNotFound, "image %q is not present on this agent: pull or import it first", from),
			typesv1.ErrorReasonImageNotFound, "image", src)
	}
	if err != nil {
		return containerizer.Image{}, fmt.Errorf("looking up image %q: %w", from, err)
	}
	nim := images.Image{Name: to, Target: im.Target, Labels: im.Labels}
	out, err := is.Update(ctx, nim, "target", "labels")
	if errdefs.IsNotFound(err) {
		out, err = is.Create(ctx, nim)
	}
	if err != nil {
		return containerizer.Image{}, fmt.Errorf("tagging image %q as %q: %w", from, to, err)
	}
	z.log.Info("image tagged", "image", from, "tag", to)
	return z.describe(ctx, out)
}

// imagesInUse names the images and the image digests of every container
// of the namespace: gearbox's own (any state) and whatever else containerd
// holds there (debug containers, execs' containers).
func (z *Containerizer) imagesInUse(ctx context.Context) (map[string]bool, error) {
	used := map[string]bool{}
	z.mu.Lock()
	for _, c := range z.containers {
		s := c.snapshot()
		used[s.Image], used[s.ImageDigest] = true, true
	}
	z.mu.Unlock()
	cs, err := z.client.ContainerService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing containers: %w", err)
	}
	for _, c := range cs {
		used[c.Image] = true
	}
	return used, nil
}

// contentBytes is the size of everything in the content store.
func (z *Containerizer) contentBytes(ctx context.Context) int64 {
	var n int64
	z.client.ContentStore().Walk(ctx, func(i content.Info) error { n += i.Size; return nil })
	return n
}

// pruneCandidates lists the images a prune may remove, least recently
// used first.
func (z *Containerizer) pruneCandidates(ctx context.Context, req containerizer.PruneRequest) ([]images.Image, error) {
	keep := map[string]bool{}
	for _, k := range req.Keep {
		full, err := NormalizeRef(k)
		if err != nil {
			return nil, err
		}
		keep[full] = true
	}
	list, err := z.client.ImageService().List(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	used, err := z.imagesInUse(ctx)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	var out []images.Image
	for _, im := range list {
		if keep[im.Name] || used[im.Name] || used[im.Target.Digest.String()] || now.Sub(lastUsed(im)) < req.UnusedFor {
			continue
		}
		out = append(out, im)
	}
	sort.SliceStable(out, func(i, j int) bool { return lastUsed(out[i]).Before(lastUsed(out[j])) })
	return out, nil
}

// Prune removes the images no container uses, least recently used first
// (see containerizer.PruneRequest). Each image is checked again just
// before its removal, so one launched meanwhile stays.
func (z *Containerizer) Prune(ctx context.Context, req containerizer.PruneRequest) (containerizer.PruneResult, error) {
	z.pruneMu.Lock()
	defer z.pruneMu.Unlock()
	var res containerizer.PruneResult
	cands, err := z.pruneCandidates(ctx, req)
	if err != nil {
		return res, err
	}
	before := z.contentBytes(ctx)
	defer func() {
		res.ReclaimedBytes = max(0, before-z.contentBytes(ctx))
		z.metrics.imagesPruned.Add(float64(len(res.Removed)))
		z.metrics.imageBytesPruned.Add(float64(res.ReclaimedBytes))
	}()
	for _, im := range cands {
		if req.Enough != nil && req.Enough() {
			break
		}
		used, err := z.imagesInUse(ctx)
		if err != nil {
			return res, err
		}
		cur, err := z.client.ImageService().Get(ctx, im.Name)
		if err != nil || used[im.Name] || used[cur.Target.Digest.String()] || lastUsed(cur).After(lastUsed(im)) {
			continue // gone, or used since it was listed
		}
		d, _ := z.describe(ctx, cur)
		if err := z.client.ImageService().Delete(ctx, im.Name, images.SynchronousDelete()); err != nil && !errdefs.IsNotFound(err) {
			return res, fmt.Errorf("removing image %q: %w", im.Name, err)
		}
		z.log.Info("image pruned", "image", im.Name, "last_used", lastUsed(im))
		res.Removed = append(res.Removed, d)
	}
	return res, nil
}

// ImageFS is a directory on the filesystem that holds the images: the
// root of containerd's content store, as containerd reports it.
func (z *Containerizer) ImageFS(ctx context.Context) (string, error) {
	resp, err := z.client.IntrospectionService().Plugins(ctx, `type=="io.containerd.content.v1"`)
	if err != nil {
		return "", fmt.Errorf("asking containerd where its content store is: %w", err)
	}
	for _, p := range resp.GetPlugins() {
		if root := p.GetExports()["root"]; root != "" {
			return root, nil
		}
	}
	return "", errs.New(errdefs.ErrNotFound, "containerd reports no content store root")
}

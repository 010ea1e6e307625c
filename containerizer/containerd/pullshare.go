package containerd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// Pull at launch. Launches of one image with the same credentials share
// one pull: the first starts it, on the containerizer's own context (so
// that a caller who gives up does not fail the others), and every launch
// waiting for it hears its progress and gets its outcome.

// pullGroup is the set of pulls under way, by key.
type pullGroup struct {
	mu    sync.Mutex
	calls map[string]*pullCall
}

type pullCall struct {
	done chan struct{}
	err  error // set before done is closed

	mu        sync.Mutex
	listeners map[int]func(containerizer.PullProgress)
	next      int
}

func (c *pullCall) listen(fn func(containerizer.PullProgress)) (stop func()) {
	if fn == nil {
		return func() {}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next
	c.next++
	c.listeners[id] = fn
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		delete(c.listeners, id)
	}
}

func (c *pullCall) progress(p containerizer.PullProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, fn := range c.listeners {
		fn(p)
	}
}

// pullKey names a pull: the resolved reference and who pulls it (a hash
// of the credentials, never the credentials themselves).
func pullKey(ref string, auth *containerizer.RegistryAuth) string {
	if auth == nil {
		return ref
	}
	h := sha256.New()
	for _, s := range []string{auth.Username, auth.Password, auth.IdentityToken, auth.RegistryToken} {
		fmt.Fprintf(h, "%d:%s", len(s), s)
	}
	return ref + "\x00" + hex.EncodeToString(h.Sum(nil))
}

// sharedPull pulls ref, or joins the pull of it under way with the same
// credentials, and waits for it (or for ctx).
func (z *Containerizer) sharedPull(ctx context.Context, ref string, auth *containerizer.RegistryAuth, progress func(containerizer.PullProgress)) error {
	key := pullKey(ref, auth)
	g := &z.pulls
	g.mu.Lock()
	if g.calls == nil {
		g.calls = map[string]*pullCall{}
	}
	c, joined := g.calls[key]
	if !joined {
		c = &pullCall{done: make(chan struct{}), listeners: map[int]func(containerizer.PullProgress){}}
		g.calls[key] = c
	}
	stop := c.listen(progress)
	g.mu.Unlock()
	defer stop()
	if joined {
		z.metrics.pullJoined()
	} else {
		z.metrics.pullsStarted()
		z.wg.Add(1)
		go func() {
			defer z.wg.Done()
			_, err := z.Pull(z.ctx, ref, auth, c.progress)
			g.mu.Lock()
			delete(g.calls, key)
			g.mu.Unlock()
			c.err = err
			close(c.done)
		}()
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// launchImage returns the image a launch runs, pulling it as cfg.Pull
// says. A failure to get it is a *containerizer.PullError.
func (z *Containerizer) launchImage(ctx context.Context, ref string, cfg containerizer.LaunchConfig) (client.Image, error) {
	if cfg.Pull != containerizer.PullAlways {
		img, err := z.client.GetImage(ctx, ref)
		if err == nil {
			return img, nil
		}
		if !errdefs.IsNotFound(err) {
			return nil, fmt.Errorf("looking up image %q: %w", ref, err)
		}
		if cfg.Pull == containerizer.PullNever {
			return nil, &containerizer.PullError{Reason: containerizer.ReasonImageNotFound, Err: errs.WithInfo(
				errs.New(errdefs.ErrNotFound, "image %q is not present on this agent and the pull policy is never (--pull never)", ref),
				typesv1.ErrorReasonImageNotFound, "image", cfg.Image)}
		}
	}
	if err := z.sharedPull(ctx, ref, cfg.Auth, cfg.PullProgress); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		reason := containerizer.ReasonImagePullFailed
		switch {
		case errdefs.IsNotFound(err):
			reason = containerizer.ReasonImageNotFound
		case errdefs.IsPermissionDenied(err):
			reason = containerizer.ReasonImageAuthFailed
		}
		return nil, &containerizer.PullError{Reason: reason, Err: err}
	}
	img, err := z.client.GetImage(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("looking up image %q after pulling it: %w", ref, err)
	}
	return img, nil
}

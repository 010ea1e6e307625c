package containerd

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/sandboxfs"
)

// Sandboxes on the host.
//
// WORK_DIR and WORK_DIR/sandboxes are gearbox's own: root's, 0700, because
// no one but root needs to pass through them. gearbox-logger runs as root
// (the shim starts it); a container reaches its sandbox through the bind
// mount at /mnt/sandbox, whose permission checks happen in the container's
// mount namespace at the sandbox itself, never at the host path's parents;
// clients read output through the Agent API. So an unprivileged host user
// cannot reach a setuid binary or a device node a container left in its
// sandbox, and the mount is nosuid,nodev besides.
//
// WORK_DIR/sandboxes/ID is gearbox's too (it makes it before the container
// exists, and no container can write the sandboxes directory), so its path
// is trusted. Its contents are not: a container writes them. So whatever
// the agent does inside a sandbox (a nested container's directory under
// containers/CHILD/, removing a sandbox or a child's directory) goes through
// internal/sandboxfs, beneath a handle on the sandbox: no symlink, no mount
// point the container planted is ever followed.

// privateDir makes dir, or tightens one an older agent left traversable,
// to root-only 0700. With followLink (the work dir: the operator may have
// made it a link to another disk) a final symlink is followed; without (the
// sandboxes directory, which every sandbox handle is opened beneath with
// O_NOFOLLOW) a symlink in its place is an error.
func privateDir(dir string, followLink bool, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	flags := unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC
	if !followLink {
		flags |= unix.O_NOFOLLOW
	}
	fd, err := unix.Open(dir, flags, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w (it must be a directory, not a symlink)", dir, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("checking %s: %w", dir, err)
	}
	if st.Mode&0o7777 == 0o700 {
		return nil
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("restricting %s to 0700: %w", dir, err)
	}
	log.Info("restricted a directory that held sandboxes to its owner", "path", dir, "was", fmt.Sprintf("%04o", st.Mode&0o7777), "now", "0700")
	return nil
}

// makeSandbox creates a container's sandbox (or takes over one left by an
// earlier container of the same ID): 0700, owned by the user the
// container's process runs as, so that a non-root container can write
// /mnt/sandbox. The sandbox is made before the container is created, and
// owned once its user is known (from its spec), before it ever runs.
func makeSandbox(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	return chownSandbox(dir, 0, 0)
}

// chownSandbox gives the sandbox dir itself to uid:gid with mode 0700,
// through a handle on the directory (never a symlink in its place).
func chownSandbox(dir string, uid, gid uint32) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening sandbox %s: %w", dir, err)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
		return fmt.Errorf("giving sandbox %s to %d:%d: %w", dir, uid, gid, err)
	}
	if err := unix.Fchmod(fd, 0o700); err != nil {
		return fmt.Errorf("restricting sandbox %s to 0700: %w", dir, err)
	}
	return nil
}

// sandboxesDir is WORK_DIR/sandboxes.
func (z *Containerizer) sandboxesDir() string { return filepath.Join(z.cfg.WorkDir, "sandboxes") }

// removeSandbox removes a container's sandbox and everything in it,
// crossing no symlink or mount point the container left there.
func (z *Containerizer) removeSandbox(id containerizer.ContainerID) error {
	root, err := sandboxfs.OpenDir(z.sandboxesDir())
	if err != nil {
		return err
	}
	defer root.Close()
	return root.RemoveAll(string(id))
}

// nestedDir is a nested container's directory beneath its parent's sandbox.
func nestedDir(child string) string { return path.Join("containers", child) }

// makeNestedDir creates containers/CHILD beneath the parent's sandbox, one
// component at a time beneath a handle: a link the parent put at
// containers or containers/CHILD is refused, never followed. The
// directories are root's 0755, as any directory of the parent's sandbox
// could be: the parent may read its children's output.
func makeNestedDir(parentSandbox, child string) error {
	root, err := sandboxfs.OpenDir(parentSandbox)
	if err != nil {
		return fmt.Errorf("opening the parent's sandbox: %w", err)
	}
	defer root.Close()
	d, err := root.MkdirAll(nestedDir(child), 0o755)
	if errors.Is(err, sandboxfs.ErrUnsafePath) || errors.Is(err, sandboxfs.ErrNotDir) {
		return errs.New(errdefs.ErrFailedPrecondition, "its directory %s in the parent's sandbox is not a plain directory (the parent container put a link or a file there; remove it): %w", nestedDir(child), err)
	}
	if err != nil {
		return fmt.Errorf("creating %s in the parent's sandbox: %w", nestedDir(child), err)
	}
	return d.Close()
}

// removeNestedDir removes containers/CHILD beneath the parent's sandbox; a
// link the parent put at either name is removed, never followed. A parent
// whose sandbox is gone has nothing left to remove.
func removeNestedDir(parentSandbox, child string) error {
	root, err := sandboxfs.OpenDir(parentSandbox)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening the parent's sandbox: %w", err)
	}
	defer root.Close()
	if err := root.RemoveAll(nestedDir(child)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing %s from the parent's sandbox: %w", nestedDir(child), err)
	}
	return nil
}

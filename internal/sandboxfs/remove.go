package sandboxfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"

	"golang.org/x/sys/unix"
)

// maxDepth bounds the descriptors RemoveAll holds open at once (one per
// level); deeper directories are moved up to the top and removed from there.
const maxDepth = 64

// maxPasses bounds how often RemoveAll re-reads the top directory (a
// container still writing into it, or a tree deeper than maxDepth).
const maxPasses = 1000

// RemoveAll removes name and everything beneath it, as os.RemoveAll, but
// resolving everything beneath handles: a symlink is removed, never
// followed, and a mount point is never crossed (ErrUnsafePath). A missing
// name is not an error.
func (d *Dir) RemoveAll(name string) error {
	p, leaf, release, err := d.parent(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer release()
	r := &remover{}
	return r.removeAt(p.Fd(), leaf, d.join(name), 0)
}

type remover struct {
	top   *os.File // the directory RemoveAll was asked to remove
	moved int      // directories moved up to top
}

// removeAt removes leaf beneath the directory descriptor parent.
func (r *remover) removeAt(parent int, leaf, where string, depth int) error {
	for range maxPasses {
		err := unix.Unlinkat(parent, leaf, 0)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.EISDIR {
			return fmt.Errorf("remove %s: %w", where, err)
		}
		fd, err := openat2(parent, leaf, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		switch {
		case err == unix.ENOENT:
			return nil
		case err == unix.ENOTDIR || err == unix.ELOOP:
			continue // swapped for a file or a symlink meanwhile: unlink that
		case err != nil:
			return kernelErr("remove", where, err)
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return fmt.Errorf("remove %s: %w", where, err)
		}
		f := os.NewFile(uintptr(fd), where)
		if r.top == nil {
			r.top = f
		}
		err = r.removeContents(f, where, depth)
		if r.top == f {
			r.top = nil
		}
		f.Close()
		if err != nil {
			return err
		}
		err = unix.Unlinkat(parent, leaf, unix.AT_REMOVEDIR)
		if err == nil || err == unix.ENOENT {
			return nil
		}
		if err != unix.ENOTEMPTY {
			return fmt.Errorf("remove directory %s: %w", where, err)
		}
		// Refilled meanwhile: go again.
	}
	return fmt.Errorf("remove %s: it keeps being refilled; stop what writes it and retry", where)
}

// removeContents empties the directory f.
func (r *remover) removeContents(f *os.File, where string, depth int) error {
	fd := int(f.Fd())
	for {
		names, err := f.Readdirnames(256)
		for _, n := range names {
			if depth+1 >= maxDepth {
				if err := r.moveUp(fd, n); err != nil {
					return fmt.Errorf("remove %s: %w", path.Join(where, n), err)
				}
				continue
			}
			if err := r.removeAt(fd, n, path.Join(where, n), depth+1); err != nil {
				return err
			}
		}
		if err == io.EOF || (err == nil && len(names) == 0) {
			break
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", where, err)
		}
	}
	if f != r.top || r.moved == 0 {
		return nil
	}
	// Directories moved up may sit before the read position: read again.
	r.moved = 0
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("list %s: %w", where, err)
	}
	return r.removeContents(f, where, depth)
}

// moveUp moves a too-deep entry to the top directory, to be removed from
// there with few descriptors open. A file or link is simply unlinked.
func (r *remover) moveUp(parent int, leaf string) error {
	err := unix.Unlinkat(parent, leaf, 0)
	if err == nil || err == unix.ENOENT {
		return nil
	}
	if err != unix.EISDIR {
		return err
	}
	for {
		r.moved++
		name := ".gearbox-rm-" + strconv.Itoa(r.moved)
		err := unix.Renameat2(parent, leaf, int(r.top.Fd()), name, unix.RENAME_NOREPLACE)
		if err != unix.EEXIST {
			return err
		}
	}
}

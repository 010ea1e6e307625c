package sandboxfs

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Entry is one name of a directory, described as it is (a symlink is
// described, never followed).
type Entry struct {
	Name string
	Stat unix.Stat_t
}

// ReadDir lists the directory name beneath d, sorted by name, at most max
// entries (ErrTooLarge beyond: a container can create millions). Each entry
// is described by fstatat beneath the directory's own handle with
// AT_SYMLINK_NOFOLLOW, so nothing is resolved by a path from the host's
// root and no link is followed. An entry removed while it is listed is
// left out.
func (d *Dir) ReadDir(name string, max int) ([]Entry, error) {
	sub, err := d.Sub(name)
	if err != nil {
		return nil, err
	}
	defer sub.Close()
	var out []Entry
	for {
		names, err := sub.f.Readdirnames(256)
		for _, n := range names {
			if len(out) >= max {
				return nil, fmt.Errorf("list %s: more than %d entries: %w", sub.path, max, ErrTooLarge)
			}
			e := Entry{Name: n}
			if err := unix.Fstatat(sub.fd, n, &e.Stat, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				if errors.Is(err, unix.ENOENT) {
					continue
				}
				return nil, fmt.Errorf("stat %s/%s: %w", sub.path, n, err)
			}
			out = append(out, e)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", sub.path, err)
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Describe stats name beneath d without following it (as Lstat), returning
// the raw stat: its type, mode, owner, links, size and times.
func (d *Dir) Describe(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	name, err := clean(name)
	if err != nil {
		return st, err
	}
	fd, err := openat2(d.Fd(), name, unix.O_PATH, 0)
	if err != nil {
		return st, kernelErr("stat", d.join(name), err)
	}
	defer unix.Close(fd)
	if err := unix.Fstat(fd, &st); err != nil {
		return st, fmt.Errorf("stat %s: %w", d.join(name), err)
	}
	return st, nil
}

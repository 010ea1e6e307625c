// Package sandboxfs is how gearbox's host processes touch a directory a
// container can write: a sandbox, a nested container's directory, anything
// bind-mounted read-write into a container.
//
// Why: the sandbox is hostile ground. The container runs as whatever user
// its image says and can replace any name in its sandbox, at any moment,
// with a symlink to a host file, a hard link, a FIFO, a device node or a
// directory. A host process (the agent, gearbox-logger, both root) that opens
// "SANDBOX/stdout" by name follows whatever is there: it reads /etc/shadow
// back to a client, appends to /etc/ld.so.preload, blocks forever on a FIFO,
// or removes a host directory while "cleaning up". Checking first and opening
// after (lstat, then open) loses the race the container runs in a loop.
//
// So every name is resolved by the kernel beneath a directory handle:
// openat2 with RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS|
// RESOLVE_NO_XDEV, always O_NOFOLLOW|O_CLOEXEC|O_NONBLOCK. A file is first
// opened O_PATH (which has no side effects: no FIFO open, no device open),
// checked with fstat to be a regular file, and only then reopened for I/O
// through /proc/self/fd, which reaches the very inode that was checked.
// Renames and removals use renameat2/unlinkat on the handle of the parent,
// itself resolved the same way, so no path component is ever followed.
// Reads of anything a container can grow are bounded (ReadFileLimit).
//
// The root handed to OpenDir is trusted: it is gearbox's own directory
// (e.g. /var/lib/gearbox/sandboxes/ID), which the container cannot rename
// or replace (it is the root of the container's bind mount). Everything
// below it is not. Names are relative slash-separated paths; absolute paths
// and ".." are refused before the kernel sees them.
//
// Use it for every open, create, stat, rename, lock or removal inside a
// directory a container can write (STYLE.md, rule 11). gearbox's own
// bookkeeping (indexes, locks, temp files) does not belong in such a
// directory at all: keep it in a host-only directory beside it.
package sandboxfs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Errors of this package; test with errors.Is.
var (
	// ErrUnsafePath: the name is absolute, contains "..", or its resolution
	// met a symlink, a magic link or a mount point beneath the handle.
	ErrUnsafePath = errors.New("unsafe path in a container-writable directory")
	// ErrNotRegular: a regular file was expected and something else (a
	// FIFO, a device node, a socket, a directory, a symlink) was found.
	ErrNotRegular = errors.New("not a regular file")
	// ErrNotDir: a directory was expected and something else was found.
	ErrNotDir = errors.New("not a directory")
	// ErrHardLinked: a write was asked to a file with more than one link.
	ErrHardLinked = errors.New("file has more than one hard link")
	// ErrTooLarge: a bounded read met more than its limit.
	ErrTooLarge = errors.New("file larger than the limit")
)

// resolve is how every name is resolved beneath a handle.
const resolve = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS |
	unix.RESOLVE_NO_MAGICLINKS | unix.RESOLVE_NO_XDEV

// Dir is a handle to a directory; names given to its methods are resolved
// beneath it. A Dir is safe for concurrent use; Close it when done.
type Dir struct {
	f    *os.File // O_RDONLY|O_DIRECTORY
	path string   // for messages only; never opened by name after OpenDir
}

// OpenDir opens the trusted directory path as a handle.
func OpenDir(p string) (*Dir, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open directory %s: %w", p, err)
	}
	return &Dir{f: os.NewFile(uintptr(fd), p), path: p}, nil
}

// Close releases the handle.
func (d *Dir) Close() error { return d.f.Close() }

// Path is the directory's path, for messages only: never open it by name.
func (d *Dir) Path() string { return d.path }

// Fd is the handle's descriptor (O_RDONLY|O_DIRECTORY), valid until Close.
func (d *Dir) Fd() int { return int(d.f.Fd()) }

func (d *Dir) join(name string) string { return filepath.Join(d.path, name) }

// clean checks name and returns it cleaned. "." names the handle itself.
func clean(name string) (string, error) {
	if name == "" || strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("name %q: %w", name, ErrUnsafePath)
	}
	if path.IsAbs(name) {
		return "", fmt.Errorf("name %q is absolute: %w", name, ErrUnsafePath)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("name %q contains \"..\": %w", name, ErrUnsafePath)
		}
	}
	return path.Clean(name), nil
}

// kernelErr gives openat2's refusals (a symlink, a magic link, a mount
// point, an escape) the class ErrUnsafePath, keeping the errno.
func kernelErr(op, where string, err error) error {
	if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.EXDEV) {
		return fmt.Errorf("%s %s: %w (%w): a container may have planted a link", op, where, ErrUnsafePath, err)
	}
	return fmt.Errorf("%s %s: %w", op, where, err)
}

// openat2 resolves name beneath dirfd, retrying the kernel's EAGAIN (a
// concurrent rename somewhere on the host) and EINTR a bounded number of
// times.
func openat2(dirfd int, name string, flags int, perm os.FileMode) (int, error) {
	flags |= unix.O_NOFOLLOW | unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		flags |= unix.O_NONBLOCK // openat2 refuses it with O_PATH, which opens nothing
	}
	how := unix.OpenHow{Flags: uint64(flags), Resolve: resolve}
	if flags&(unix.O_CREAT|unix.O_TMPFILE) != 0 {
		how.Mode = uint64(perm.Perm())
	}
	var err error
	for range 64 {
		var fd int
		fd, err = unix.Openat2(dirfd, name, &how)
		if err == nil {
			return fd, nil
		}
		if err != unix.EAGAIN && err != unix.EINTR {
			return -1, err
		}
	}
	return -1, err
}

// Sub opens the directory name beneath d as a new handle.
func (d *Dir) Sub(name string) (*Dir, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	// O_DIRECTORY refuses anything else before opening it (no FIFO or
	// device is opened); O_NOFOLLOW makes a final symlink ELOOP.
	fd, err := openat2(d.Fd(), name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			// O_DIRECTORY|O_NOFOLLOW meets a final symlink as ENOTDIR; look
			// again, for the error's class only.
			if fi, lerr := d.Lstat(name); lerr == nil && fi.Mode()&os.ModeSymlink != 0 {
				return nil, fmt.Errorf("open directory %s: a symlink: %w", d.join(name), ErrUnsafePath)
			}
			return nil, fmt.Errorf("open directory %s: %w", d.join(name), ErrNotDir)
		}
		return nil, kernelErr("open directory", d.join(name), err)
	}
	return &Dir{f: os.NewFile(uintptr(fd), d.join(name)), path: d.join(name)}, nil
}

// parent returns the handle of name's parent directory and name's last
// component; release must be called when done.
func (d *Dir) parent(name string) (p *Dir, leaf string, release func(), err error) {
	name, err = clean(name)
	if err != nil {
		return nil, "", nil, err
	}
	dir, leaf := path.Split(name)
	if leaf == "." {
		return nil, "", nil, fmt.Errorf("name %q names the directory itself: %w", name, ErrUnsafePath)
	}
	if dir == "" {
		return d, leaf, func() {}, nil
	}
	p, err = d.Sub(dir)
	if err != nil {
		return nil, "", nil, err
	}
	return p, leaf, func() { p.Close() }, nil
}

// Mkdir creates the directory name beneath d; its parent must exist.
func (d *Dir) Mkdir(name string, perm os.FileMode) error {
	p, leaf, release, err := d.parent(name)
	if err != nil {
		return err
	}
	defer release()
	if err := unix.Mkdirat(p.Fd(), leaf, uint32(perm.Perm())); err != nil {
		return fmt.Errorf("mkdir %s: %w", d.join(name), err)
	}
	return nil
}

// MkdirAll creates name and any missing parents beneath d, one component at
// a time, and returns a handle to it. An existing component must be a
// directory (a symlink is refused, never followed).
func (d *Dir) MkdirAll(name string, perm os.FileMode) (*Dir, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	cur, err := d.Sub(".")
	if err != nil {
		return nil, err
	}
	if name == "." {
		return cur, nil
	}
	for _, c := range strings.Split(name, "/") {
		err := unix.Mkdirat(cur.Fd(), c, uint32(perm.Perm()))
		if err != nil && err != unix.EEXIST {
			cur.Close()
			return nil, fmt.Errorf("mkdir %s: %w", cur.join(c), err)
		}
		next, err := cur.Sub(c)
		cur.Close()
		if err != nil {
			return nil, err
		}
		cur = next
	}
	return cur, nil
}

func isWrite(flags int) bool {
	return flags&(unix.O_WRONLY|unix.O_RDWR|unix.O_APPEND|unix.O_TRUNC) != 0
}

// Open opens the regular file name beneath d with flags (os.O_* values) and,
// when it creates it, perm. It never opens anything but a regular file: a
// FIFO, device node, socket, directory or symlink at name fails with
// ErrNotRegular (or ErrUnsafePath for a link) without being opened for I/O,
// so it neither blocks nor has a device's side effects.
//
// A write (O_WRONLY, O_RDWR, O_APPEND, O_TRUNC) to a file with more than one
// hard link fails with ErrHardLinked. A container can hard-link only files
// on the same mount as its sandbox, but that can be a host file it can see
// elsewhere (protected_hardlinks aside); gearbox's files have one link.
//
// O_CREAT without O_EXCL opens an existing regular file or creates one.
func (d *Dir) Open(name string, flags int, perm os.FileMode) (*os.File, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	where := d.join(name)
	for range 8 {
		pfd, err := openat2(d.Fd(), name, unix.O_PATH, 0)
		if errors.Is(err, unix.ENOENT) && flags&os.O_CREATE != 0 {
			// Create with O_EXCL: what we create is a new regular file.
			fd, err := openat2(d.Fd(), name, flags|unix.O_EXCL, perm)
			if errors.Is(err, unix.EEXIST) && flags&os.O_EXCL == 0 {
				continue // created meanwhile (perhaps by the container): check it
			}
			if err != nil {
				return nil, kernelErr("create", where, err)
			}
			return newFile(fd, where)
		}
		if err != nil {
			return nil, kernelErr("open", where, err)
		}
		if flags&os.O_EXCL != 0 && flags&os.O_CREATE != 0 {
			unix.Close(pfd)
			return nil, fmt.Errorf("create %s: %w", where, os.ErrExist)
		}
		f, err := reopen(pfd, flags&^(os.O_CREATE|os.O_EXCL), where)
		unix.Close(pfd)
		return f, err
	}
	return nil, fmt.Errorf("open %s: name keeps changing between create and open: %w", where, ErrUnsafePath)
}

// reopen checks that the O_PATH descriptor pfd is a regular file fit for
// flags and opens that very inode for I/O through /proc/self/fd.
func reopen(pfd int, flags int, where string) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(pfd, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", where, err)
	}
	if st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return nil, fmt.Errorf("open %s: a symlink: %w", where, ErrUnsafePath)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, fmt.Errorf("open %s (%s): %w", where, typeName(st.Mode), ErrNotRegular)
	}
	if isWrite(flags) && st.Nlink > 1 {
		return nil, fmt.Errorf("open %s for writing: %d links: %w", where, st.Nlink, ErrHardLinked)
	}
	// The magic link is ours (our own descriptor table), not the container's.
	fd, err := unix.Open("/proc/self/fd/"+strconv.Itoa(pfd), flags|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("reopen %s: %w", where, err)
	}
	return newFile(fd, where)
}

// newFile checks fd is a regular file, clears O_NONBLOCK (regular files
// never block on it; clearing keeps os.File from treating fd as pollable)
// and wraps it.
func newFile(fd int, where string) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("stat %s: %w", where, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("open %s (%s): %w", where, typeName(st.Mode), ErrNotRegular)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open %s: clear O_NONBLOCK: %w", where, err)
	}
	return os.NewFile(uintptr(fd), where), nil
}

func typeName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "character device"
	case unix.S_IFBLK:
		return "block device"
	}
	return "unknown type"
}

// OpenRead opens the regular file name for reading.
func (d *Dir) OpenRead(name string) (*os.File, error) {
	return d.Open(name, os.O_RDONLY, 0)
}

// OpenAppend opens the regular file name for appending, creating it with
// perm if missing.
func (d *Dir) OpenAppend(name string, perm os.FileMode) (*os.File, error) {
	return d.Open(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE, perm)
}

// Create creates name with perm, or truncates the regular file there.
func (d *Dir) Create(name string, perm os.FileMode) (*os.File, error) {
	return d.Open(name, os.O_WRONLY|os.O_TRUNC|os.O_CREATE, perm)
}

// Lstat describes name itself (a symlink is described, never followed).
func (d *Dir) Lstat(name string) (os.FileInfo, error) {
	name, err := clean(name)
	if err != nil {
		return nil, err
	}
	// O_PATH|O_NOFOLLOW on a final symlink yields the link itself even
	// with RESOLVE_NO_SYMLINKS; a link earlier in the path is refused.
	fd, err := openat2(d.Fd(), name, unix.O_PATH, 0)
	if err != nil {
		return nil, kernelErr("stat", d.join(name), err)
	}
	f := os.NewFile(uintptr(fd), path.Base(name))
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", d.join(name), err)
	}
	return fi, nil
}

// Stat is Lstat: nothing beneath a handle is followed.
func (d *Dir) Stat(name string) (os.FileInfo, error) { return d.Lstat(name) }

// Rename renames oldName to newName, both beneath d, replacing newName if
// it exists (a directory only by an empty directory, as rename(2)).
func (d *Dir) Rename(oldName, newName string) error {
	return d.rename(oldName, newName, 0)
}

// RenameNoReplace renames oldName to newName and fails with os.ErrExist if
// newName exists.
func (d *Dir) RenameNoReplace(oldName, newName string) error {
	return d.rename(oldName, newName, unix.RENAME_NOREPLACE)
}

func (d *Dir) rename(oldName, newName string, flags uint) error {
	op, ol, orel, err := d.parent(oldName)
	if err != nil {
		return err
	}
	defer orel()
	np, nl, nrel, err := d.parent(newName)
	if err != nil {
		return err
	}
	defer nrel()
	if err := unix.Renameat2(op.Fd(), ol, np.Fd(), nl, flags); err != nil {
		return fmt.Errorf("rename %s to %s: %w", d.join(oldName), d.join(newName), err)
	}
	return nil
}

// Remove removes name (a file, a symlink itself, or an empty directory).
func (d *Dir) Remove(name string) error {
	p, leaf, release, err := d.parent(name)
	if err != nil {
		return err
	}
	defer release()
	err = unix.Unlinkat(p.Fd(), leaf, 0)
	if err == unix.EISDIR {
		err = unix.Unlinkat(p.Fd(), leaf, unix.AT_REMOVEDIR)
	}
	if err != nil {
		return fmt.Errorf("remove %s: %w", d.join(name), err)
	}
	return nil
}

// ReadFileLimit reads the regular file name whole, failing with
// ErrTooLarge if it holds more than max bytes.
func (d *Dir) ReadFileLimit(name string, max int64) ([]byte, error) {
	f, err := d.OpenRead(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadLimit(f, max)
}

// ReadLimit reads f from its offset to the end, failing with ErrTooLarge
// if more than max bytes follow.
func ReadLimit(f *os.File, max int64) ([]byte, error) {
	var buf []byte
	if fi, err := f.Stat(); err == nil && fi.Size() > 0 && fi.Size() <= max {
		buf = make([]byte, 0, fi.Size()+1)
	}
	chunk := make([]byte, 32*1024)
	for {
		n, err := f.Read(chunk)
		if int64(len(buf)+n) > max {
			return nil, fmt.Errorf("read %s: more than %d bytes: %w", f.Name(), max, ErrTooLarge)
		}
		buf = append(buf, chunk[:n]...)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			return nil, fmt.Errorf("read %s: %w", f.Name(), err)
		}
	}
}

// Package atomicfile replaces a file so that a crash, of the process or of
// the host, leaves either the old content or the new one, never a mix or
// an empty file.
//
// Write promises, when it returns nil: the new content is on stable storage
// under its name (the file and the rename are both fsynced). The steps are
// the classic ones: write a temporary file beside the target, fsync it,
// rename it over the target, fsync the directory (the rename itself lives
// in the directory). Without the first fsync, ext4 and xfs may persist the
// rename before the data, and a power loss leaves an empty file; without
// the second, the rename may be lost and a new file vanish altogether.
//
// Temporary files are named "<base>.<random>.tmp" in the target's
// directory; one that a crash left behind holds an unfinished write, and
// whoever reads the directory at start removes it (Leftover says which).
//
// Only for directories gearbox alone writes (work_dir/meta, the audit
// log's): it opens paths by name.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// TempSuffix ends the name of every temporary file.
const TempSuffix = ".tmp"

// File is a replacement under way: written to a temporary file, visible
// under the target's name only after Commit.
type File struct {
	f      *os.File
	path   string
	closed bool
}

// Create starts replacing path with a new file of mode perm.
func Create(path string, perm os.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".*"+TempSuffix)
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return &File{f: f, path: path}, nil
}

// Write writes to the temporary file.
func (a *File) Write(p []byte) (int, error) { return a.f.Write(p) }

// Commit makes the new content durable under the target's name: fsync the
// file, close it, rename it over the target, fsync the directory. On error
// the temporary file is removed and the target is unchanged, or replaced
// but maybe not yet durable when only the directory's fsync failed.
func (a *File) Commit() error {
	if a.closed {
		return fmt.Errorf("writing %s: already committed or aborted", a.path)
	}
	a.closed = true
	tmp := a.f.Name()
	err := a.f.Sync()
	if cerr := a.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, a.path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", a.path, err)
	}
	if err := SyncDir(filepath.Dir(a.path)); err != nil {
		return fmt.Errorf("writing %s: %w", a.path, err)
	}
	return nil
}

// Abort drops the new content; the target is untouched. It does nothing
// after Commit, so that it can be deferred.
func (a *File) Abort() {
	if a.closed {
		return
	}
	a.closed = true
	a.f.Close()
	os.Remove(a.f.Name())
}

// Write replaces path with data, durably (see the package's comment).
func Write(path string, data []byte, perm os.FileMode) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Abort()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Commit()
}

// SyncDir fsyncs a directory, making the creations, renames and removals
// of entries in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("syncing directory %s: %w", dir, err)
	}
	return nil
}

// Leftover says whether a directory entry's name is a temporary file of
// this package: a write that a crash interrupted, safe to remove.
func Leftover(name string) bool {
	return strings.HasSuffix(name, TempSuffix)
}

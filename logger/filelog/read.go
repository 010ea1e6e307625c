package filelog

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/errdefs"

	"github.com/gearboxd/gearbox/internal/errs"
	"github.com/gearboxd/gearbox/internal/sandboxfs"
	"github.com/gearboxd/gearbox/logger"
	"github.com/gearboxd/gearbox/logger/shimlog"
)

// position is where a stream's reader stands: a file (by inode) and an
// offset in it.
type position struct {
	ino uint64
	off int64
}

// Cursor is "stdout=INO:OFF,stderr=INO:OFF": both streams' positions.
func formatCursor(pos map[logger.Stream]position) string {
	var parts []string
	for _, s := range []logger.Stream{logger.Stdout, logger.Stderr} {
		if p, ok := pos[s]; ok {
			parts = append(parts, fmt.Sprintf("%s=%d:%d", s, p.ino, p.off))
		}
	}
	return strings.Join(parts, ",")
}

// ParseCursor reads a cursor from a client.
func ParseCursor(c string) (map[logger.Stream]position, error) {
	out := map[logger.Stream]position{}
	if c == "" {
		return out, nil
	}
	bad := errs.New(errdefs.ErrInvalidArgument, "cursor %q is malformed: pass back a cursor gearbox gave you", c)
	for _, part := range strings.Split(c, ",") {
		name, val, ok := strings.Cut(part, "=")
		ino, off, ok2 := strings.Cut(val, ":")
		if !ok || !ok2 {
			return nil, bad
		}
		var s logger.Stream
		switch name {
		case "stdout":
			s = logger.Stdout
		case "stderr":
			s = logger.Stderr
		default:
			return nil, bad
		}
		i, err1 := strconv.ParseUint(ino, 10, 64)
		o, err2 := strconv.ParseInt(off, 10, 64)
		if err1 != nil || err2 != nil || o < 0 {
			return nil, bad
		}
		out[s] = position{ino: i, off: o}
	}
	return out, nil
}

// streamReader reads one stream across its rotation chain. Files are
// opened beneath dir, the sandbox's handle; name is "stdout" or "stderr".
type streamReader struct {
	s     logger.Stream
	dir   *sandboxfs.Dir
	name  string
	state string // the host-only state directory
	files int
	// limit caps how far into any file the reader goes (0: no cap). The
	// container can grow or replace its files (a 20 GiB sparse file, a
	// /dev/zero): the rotating logger never writes a file past its max
	// size, so nothing past that (and a line's slack) is the logger's.
	limit int64
	f     *os.File
	pos   position
}

// lineSlack is how far past max-size a rotating logger's file may be read.
const lineSlack = 64 * 1024

// sandboxScan bounds the backward tail scan of the unrotated sandbox
// logger's file, which is unbounded by design.
const sandboxScan = 64 << 20

// oversize says whether f is a rotated file (not the live one, the last
// of the chain) larger than the logger ever writes: the container planted
// it, and it is skipped.
func (r *streamReader) oversize(f *os.File, live bool) bool {
	if r.limit <= 0 || live {
		return false
	}
	fi, err := f.Stat()
	return err != nil || fi.Size() > r.limit
}

// readLimit is the per-file cap of a read (0: none, the sandbox logger).
func (l *Logger) readLimit(c logger.Container) int64 {
	if l.Rotate && c.Options.MaxSize > 0 {
		return c.Options.MaxSize + lineSlack
	}
	return 0
}

func (r *streamReader) close() {
	if r.f != nil {
		r.f.Close()
	}
}

func (r *streamReader) lockPath() string { return shimlog.ChainLockPath(r.state, r.name) }

func (r *streamReader) setFile(f *os.File, off int64) error {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	if off > 0 {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			f.Close()
			return err
		}
	}
	r.close()
	r.f, r.pos = f, position{ino: inode(fi), off: off}
	return nil
}

// start opens the file to begin with: at the cursor, at the output since a
// time, at the last tail lines, or at the oldest file kept.
func (r *streamReader) start(ctx context.Context, cur *position, tail int, since time.Time) error {
	return withChainLock(ctx, r.lockPath(), func() error {
		names := chain(r.name, r.files)
		if cur == nil && !since.IsZero() {
			p, ok, err := sincePosition(ctx, shimlog.TimesPath(r.state, r.name), since)
			if err != nil {
				return err
			}
			if ok {
				cur = &p
			} else {
				// Nothing was written since: start at the end.
				f, err := r.dir.OpenRead(r.name)
				if err != nil {
					return err
				}
				fi, err := f.Stat()
				if err != nil {
					f.Close()
					return err
				}
				return r.setFile(f, fi.Size())
			}
		}
		if cur != nil {
			for _, n := range names {
				if f, err := r.dir.OpenRead(n); err == nil {
					if fi, err := f.Stat(); err == nil && inode(fi) == cur.ino {
						return r.setFile(f, min(cur.off, fi.Size()))
					}
					f.Close()
				}
			}
			// The cursor's file was rotated away: the oldest kept follows.
		}
		if tail >= 0 && cur == nil { // (with since, since wins)
			idx, off, err := tailStart(ctx, r.dir, names, tail, r.limit)
			if err != nil {
				return err
			}
			f, err := r.dir.OpenRead(names[idx])
			if err != nil {
				return err
			}
			return r.setFile(f, off)
		}
		var firstErr error
		for i, n := range names {
			f, err := r.dir.OpenRead(n)
			if err == nil && r.oversize(f, i == len(names)-1) {
				f.Close()
				continue
			}
			if err == nil {
				return r.setFile(f, 0)
			}
			if !errors.Is(err, os.ErrNotExist) && firstErr == nil {
				firstErr = err
			}
		}
		if firstErr != nil {
			return firstErr
		}
		return fmt.Errorf("no %s file for this container", r.s)
	})
}

// timesLine bounds a line of the time index ("UNIXNANO INODE OFFSET").
const timesLine = 128

// sincePosition reads the time index: the first entry of the second of
// since or later. ok is false when nothing was written since. The index is
// host-only, but it grows for the container's life: it is scanned line by
// line with bounded lines, and the scan stops when ctx ends.
func sincePosition(ctx context.Context, timesPath string, since time.Time) (position, bool, error) {
	f, err := os.Open(timesPath)
	if err != nil {
		// No index (a logger from before it kept one): all that is kept.
		return position{}, true, nil
	}
	defer f.Close()
	want := since.Unix()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, timesLine), timesLine)
	for i := 0; sc.Scan(); i++ {
		if i%4096 == 0 && ctx.Err() != nil {
			return position{}, false, ctx.Err()
		}
		fs := strings.Fields(sc.Text())
		if len(fs) != 3 {
			continue
		}
		ns, err1 := strconv.ParseInt(fs[0], 10, 64)
		ino, err2 := strconv.ParseUint(fs[1], 10, 64)
		off, err3 := strconv.ParseInt(fs[2], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			continue
		}
		if time.Unix(0, ns).Unix() >= want {
			return position{ino: ino, off: off}, true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return position{}, false, fmt.Errorf("reading the time index: %w", err)
	}
	return position{}, false, nil
}

// tailStart finds where the last n lines of the chain (names, oldest first)
// begin: the index of the file and the offset in it. The files are the
// container's to grow: the backward scan stops when ctx ends, looks at no
// more than limit bytes of a file (limit > 0: the rotating logger) and at
// no more than sandboxScan bytes in all (the unrotated sandbox logger);
// when it stops short, the tail starts where it stopped.
func tailStart(ctx context.Context, dir *sandboxfs.Dir, names []string, n int, limit int64) (int, int64, error) {
	last := len(names) - 1
	capped := func(size int64) int64 {
		if limit > 0 {
			return min(size, limit)
		}
		return size
	}
	if n == 0 {
		fi, err := dir.Lstat(names[last])
		if err != nil {
			return last, 0, nil
		}
		return last, capped(fi.Size()), nil
	}
	budget := int64(sandboxScan)
	if limit > 0 {
		budget = limit * int64(len(names))
	}
	seen := 0
	trailing := true // the newline that ends the very last line is no separator
	oldest := last
	buf := make([]byte, 64*1024)
	for i := last; i >= 0; i-- {
		f, err := dir.OpenRead(names[i])
		if err != nil {
			break // older files were rotated away
		}
		fi, err := f.Stat()
		if err != nil || (limit > 0 && i < last && fi.Size() > limit) {
			f.Close()
			break // (a rotated file larger than the logger writes was planted)
		}
		oldest = i
		for end := capped(fi.Size()); end > 0; {
			if err := ctx.Err(); err != nil {
				f.Close()
				return 0, 0, err
			}
			if budget <= 0 {
				f.Close()
				return i, end, nil
			}
			start := max(0, end-min(int64(len(buf)), budget))
			budget -= end - start
			chunk := buf[:end-start]
			if _, err := f.ReadAt(chunk, start); err != nil && err != io.EOF {
				break
			}
			for j := len(chunk) - 1; j >= 0; j-- {
				if chunk[j] != '\n' {
					trailing = false
					continue
				}
				if trailing {
					trailing = false
					continue
				}
				if seen++; seen == n {
					f.Close()
					return i, start + int64(j) + 1, nil
				}
			}
			end = start
		}
		f.Close()
	}
	return oldest, 0, nil
}

// advance moves to the next file of the chain when the writer has rotated
// away from the current one. The old file is complete by then (the writer
// never writes to a rotated file), so it is drained first: nothing is
// skipped and nothing read twice.
func (r *streamReader) advance(ctx context.Context, emit func([]byte) error) (bool, error) {
	var next *os.File
	err := withChainLock(ctx, r.lockPath(), func() error {
		fi, err := r.dir.Lstat(r.name)
		if err == nil && inode(fi) == r.pos.ino {
			return nil // still the live file
		}
		names := chain(r.name, r.files)
		found := -1
		for i, n := range names {
			if fi, err := r.dir.Lstat(n); err == nil && inode(fi) == r.pos.ino {
				found = i
			}
		}
		from := 0 // our file was rotated out of the chain: go on with the oldest kept
		if found >= 0 {
			from = found + 1
		}
		from = min(from, len(names)-1)
		for i, n := range names[from:] {
			if f, err := r.dir.OpenRead(n); err == nil {
				if r.oversize(f, from+i == len(names)-1) {
					f.Close()
					continue
				}
				next = f
				return nil
			}
		}
		return nil
	})
	if err != nil || next == nil {
		return false, err
	}
	if err := r.drain(ctx, emit); err != nil {
		next.Close()
		return false, err
	}
	return true, r.setFile(next, 0)
}

// drain reads the current file to its end.
func (r *streamReader) drain(ctx context.Context, emit func([]byte) error) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := r.readSome(emit)
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

var readBufs = make(chan []byte, 16)

func (r *streamReader) readSome(emit func([]byte) error) (int, error) {
	var buf []byte
	select {
	case buf = <-readBufs:
	default:
		buf = make([]byte, 64*1024)
	}
	defer func() {
		select {
		case readBufs <- buf:
		default:
		}
	}()
	if r.limit > 0 {
		// Past the cap is not the logger's output: read as the end.
		room := r.limit - r.pos.off
		if room <= 0 {
			return 0, nil
		}
		buf = buf[:min(int64(len(buf)), room)]
	}
	n, err := r.f.Read(buf)
	buf = buf[:cap(buf)]
	if n > 0 {
		r.pos.off += int64(n)
		if eerr := emit(buf[:n]); eerr != nil {
			return n, eerr
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return n, err
	}
	return n, nil
}

func (l *Logger) Read(ctx context.Context, req logger.ReadRequest, fn func(logger.Chunk) error) error {
	cursors, err := ParseCursor(req.Cursor)
	if err != nil {
		return err
	}
	dir, err := l.openSandbox(req.Container)
	if err != nil {
		return errs.New(errdefs.ErrNotFound, "reading the output of container %s: %w", req.Container.ID, err)
	}
	defer dir.Close()
	rs, err := l.startReaders(ctx, req, cursors, dir, fn)
	defer rs.close()
	if err != nil {
		return err
	}
	interval := l.PollInterval
	if interval <= 0 {
		interval = 50 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		progress, err := rs.pass(ctx)
		if err != nil {
			return err
		}
		if progress {
			continue
		}
		if !req.Follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-req.Done:
			for {
				progress, err := rs.pass(ctx)
				if err != nil || !progress {
					return err
				}
			}
		case <-t.C:
		}
	}
}

// readSet is one Read's readers, one per stream asked for, and the
// position of each that the next chunk's cursor carries.
type readSet struct {
	readers []*streamReader
	pos     map[logger.Stream]position
	fn      func(logger.Chunk) error
}

// startReaders opens a reader per stream of req at its cursor, tail or
// since. The set it returns is closed by the caller, even with an error.
func (l *Logger) startReaders(ctx context.Context, req logger.ReadRequest, cursors map[logger.Stream]position, dir *sandboxfs.Dir, fn func(logger.Chunk) error) (*readSet, error) {
	rs := &readSet{pos: map[logger.Stream]position{}, fn: fn}
	streams := req.Streams
	if len(streams) == 0 {
		streams = []logger.Stream{logger.Stdout, logger.Stderr}
	}
	for _, s := range streams {
		r := &streamReader{s: s, dir: dir, name: s.String(), state: l.stateDir(req.Container), files: l.files(req.Container), limit: l.readLimit(req.Container)}
		var cur *position
		if p, ok := cursors[s]; ok {
			cur = &p
		}
		if err := r.start(ctx, cur, req.Tail, req.Since); err != nil {
			if ctx.Err() != nil {
				return rs, err
			}
			return rs, errs.New(errdefs.ErrNotFound, "reading %s of container %s: %w", s, req.Container.ID, err)
		}
		rs.readers = append(rs.readers, r)
		rs.pos[s] = r.pos
	}
	return rs, nil
}

func (rs *readSet) close() {
	for _, r := range rs.readers {
		r.close()
	}
}

// pass reads what is there now, crossing rotations; it says whether
// anything was read.
func (rs *readSet) pass(ctx context.Context) (bool, error) {
	progress := false
	for _, r := range rs.readers {
		emit := func(b []byte) error {
			rs.pos[r.s] = r.pos
			return rs.fn(logger.Chunk{Stream: r.s, Data: b, Cursor: formatCursor(rs.pos)})
		}
		for {
			if err := ctx.Err(); err != nil {
				return progress, err
			}
			n, err := r.readSome(emit)
			if err != nil {
				return progress, err
			}
			if n > 0 {
				progress = true
				continue
			}
			moved, err := r.advance(ctx, emit)
			if err != nil {
				return progress, err
			}
			if !moved {
				break
			}
			progress = true
		}
	}
	return progress, nil
}

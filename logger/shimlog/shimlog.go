// Package shimlog is the code behind the gearbox-logger binary: a containerd
// binary-logging plugin. The shim starts it before the container's task,
// passes the container's stdout on fd 3 and stderr on fd 4, and waits for fd
// 5 to be closed as the sign that the logger is ready. Arguments arrive as
// bare "key value" pairs in no fixed order.
//
// It keeps running whatever happens to the agent or containerd. When the
// task is deleted the shim sends SIGTERM and waits (12 s) for it to exit: the
// logger then drains both pipes to their end before exiting, so no line is
// lost and the files are complete once the task's Delete returns.
//
// Per stream it writes a live file (stdout) and, with max-size, rotates it
// the moment the limit would be passed, on a line boundary: stdout → stdout.1
// → … → stdout.(max-files-1), so `tail -F stdout` works. A single line
// longer than max-size is split and each piece but the last ends with
// SplitMarker. Rotation happens under an exclusive flock on NAME.lock in the
// host-only state directory; readers take it shared to resolve the chain.
//
// The sandbox is hostile ground (internal/sandboxfs): the logger opens,
// renames and removes files in it only beneath a handle to it, never follows
// what the container puts at a name, and keeps its own bookkeeping (time
// index, locks, status, temp files) in the host-only state directory.
//
// Policies: mode "block" (default) never loses a line: when a write fails
// (a full disk) it retries every second, and the container blocks once the
// pipe is full. Mode "drop" never blocks the container: what does not fit in
// a 1 MiB buffer is dropped and a line says how many bytes were.
//
// The logger holds an exclusive flock on the state directory's "lock" file
// for its whole life (the agent probes it to notice a dead logger) and
// writes write failures into its "status" file (empty when all is well).
//
// It imports nothing heavy: one runs per container.
package shimlog

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gearboxd/gearbox/internal/sandboxfs"
)

// SplitMarker ends each piece of a line that was longer than max-size.
const SplitMarker = " [gearbox-logger: line split]\n"

// Modes.
const (
	ModeBlock = "block"
	ModeDrop  = "drop"
)

// dropBuffer is how much drop mode holds before it drops.
const dropBuffer = 1 << 20

// Args are the logger's arguments.
//
// The logger is root and outside every cgroup, and the sandbox is hostile
// ground (internal/sandboxfs), so it gets no path inside the sandbox to open
// by name: it gets the agent's sandboxes directory (Root, trusted: gearbox's
// own), opens it once, and resolves the container's sandbox (Sandbox, a
// relative name such as "ID" or "ID/containers/CHILD") and every file in it
// beneath that handle. Its own bookkeeping (liveness lock, status, the time
// index and the rotation lock of each stream) lives in State, a host-only
// directory the container cannot see.
//
// The old arguments (stdout PATH, stderr PATH, lock PATH, status PATH) are
// not accepted: the shim starts the logger once per task with the arguments
// of the agent that launched it, and a running logger is never restarted by
// a newer agent (a new agent version only launches new tasks).
type Args struct {
	Root     string // the agent's sandboxes directory (absolute, trusted)
	Sandbox  string // the container's sandbox, relative to Root
	State    string // the container's host-only state directory (absolute)
	MaxSize  int64  // rotate at this size; 0: never
	MaxFiles int    // files kept per stream, the live one included
	Mode     string // block or drop
}

// Files in the state directory.
const (
	LockFile   = "lock"   // held exclusively for the logger's life
	StatusFile = "status" // write failures, empty when all is well
)

// ParseArgs reads "key value" pairs.
func ParseArgs(args []string) (Args, error) {
	a := Args{MaxFiles: 1, Mode: ModeBlock}
	if len(args)%2 != 0 {
		return a, fmt.Errorf("arguments must be key value pairs, got %d words", len(args))
	}
	for i := 0; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		var err error
		switch k {
		case "root":
			a.Root = v
			if !filepath.IsAbs(v) {
				err = errors.New("not an absolute path")
			}
		case "sandbox":
			a.Sandbox = v
			if v == "" || filepath.IsAbs(v) || slices.Contains(strings.Split(v, "/"), "..") {
				err = errors.New("must be a path relative to root, without \"..\"")
			}
		case "state":
			a.State = v
			if !filepath.IsAbs(v) {
				err = errors.New("not an absolute path")
			}
		case "max-size":
			a.MaxSize, err = strconv.ParseInt(v, 10, 64)
			if err == nil && a.MaxSize < 0 {
				err = errors.New("negative")
			}
		case "max-files":
			a.MaxFiles, err = strconv.Atoi(v)
			if err == nil && (a.MaxFiles < 1 || a.MaxFiles > 1000) {
				err = errors.New("out of range 1-1000")
			}
		case "mode":
			a.Mode = v
			if v != ModeBlock && v != ModeDrop {
				err = errors.New("not block or drop")
			}
		default:
			return a, fmt.Errorf("unknown argument %q", k)
		}
		if err != nil {
			return a, fmt.Errorf("argument %s %q: %v", k, v, err)
		}
	}
	if a.Root == "" || a.Sandbox == "" || a.State == "" {
		return a, errors.New("root, sandbox and state are required")
	}
	return a, nil
}

// Main runs the logger as the shim starts it and returns its exit status.
func Main(args []string) int {
	// SIGTERM from the shim means "the task is being deleted": keep
	// draining until the pipes end.
	signal.Ignore(syscall.SIGTERM, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGHUP)

	ready := os.NewFile(5, "ready")
	stdout := os.NewFile(3, "stdout")
	stderr := os.NewFile(4, "stderr")

	a, err := ParseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "gearbox-logger: %v\n", err)
		// Drain so that the container does not block, then fail.
		ready.Close()
		drain(stdout, stderr)
		return 2
	}
	return Run(a, stdout, stderr, ready)
}

// Run copies the two streams into their files. ready, when not nil, is
// closed once the files are open and the lock is held.
func Run(a Args, stdout, stderr io.Reader, ready io.Closer) int {
	st := &statusFile{path: filepath.Join(a.State, StatusFile)}
	if err := os.MkdirAll(a.State, 0o700); err != nil {
		fmt.Fprintf(os.Stderr, "gearbox-logger: state directory: %v\n", err)
	}
	if f, err := os.OpenFile(filepath.Join(a.State, LockFile), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600); err == nil {
		// Host-only: nobody but another logger of this container holds it.
		syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		defer f.Close() // the lock goes with the process
	}
	st.set("")
	var outW, errW *rotator
	dir, err1 := openSandbox(a.Root, a.Sandbox)
	err2 := err1
	if err1 == nil {
		defer dir.Close()
		outW, err1 = newRotator(dir, "stdout", a.State, a.MaxSize, a.MaxFiles, st)
		errW, err2 = newRotator(dir, "stderr", a.State, a.MaxSize, a.MaxFiles, st)
	}
	if ready != nil {
		ready.Close()
	}
	var wg sync.WaitGroup
	status := 0
	var mu sync.Mutex
	fail := func(err error) {
		fmt.Fprintf(os.Stderr, "gearbox-logger: %v\n", err)
		st.set(err.Error())
		mu.Lock()
		status = 1
		mu.Unlock()
	}
	copyTo := func(w *rotator, openErr error, r io.Reader) {
		defer wg.Done()
		if openErr != nil {
			fail(openErr)
			io.Copy(io.Discard, r)
			return
		}
		defer w.close()
		if a.Mode == ModeDrop {
			copyDropping(w, r)
		} else {
			copyBlocking(w, r)
		}
	}
	wg.Add(2)
	go copyTo(outW, err1, stdout)
	go copyTo(errW, err2, stderr)
	wg.Wait()
	return status
}

// openSandbox opens the trusted root once and the sandbox beneath it.
func openSandbox(root, sandbox string) (*sandboxfs.Dir, error) {
	r, err := sandboxfs.OpenDir(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Sub(sandbox)
}

func copyBlocking(w *rotator, r io.Reader) {
	buf := make([]byte, 128*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			w.writeRetrying(buf[:n])
		}
		if err != nil {
			return
		}
	}
}

// copyDropping reads as fast as the pipe gives and hands data to the writer
// through a bounded queue; what does not fit is counted and dropped.
func copyDropping(w *rotator, r io.Reader) {
	type chunk struct {
		data    []byte
		dropped int64
	}
	q := make(chan chunk, 64)
	var queued int64
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for c := range q {
			if c.dropped > 0 {
				w.writeRetrying([]byte(fmt.Sprintf("%s[gearbox-logger: dropped %d bytes]\n", w.lineBreak(), c.dropped)))
			}
			if len(c.data) > 0 {
				w.writeRetrying(c.data)
			}
			mu.Lock()
			queued -= int64(len(c.data))
			mu.Unlock()
		}
	}()
	var dropped int64
	buf := make([]byte, 64*1024)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			mu.Lock()
			fits := queued+int64(n) <= dropBuffer
			if fits {
				queued += int64(n)
			}
			mu.Unlock()
			if fits {
				select {
				case q <- chunk{data: bytes.Clone(buf[:n]), dropped: dropped}:
					dropped = 0
				default:
					mu.Lock()
					queued -= int64(n)
					mu.Unlock()
					dropped += int64(n)
				}
			} else {
				dropped += int64(n)
			}
		}
		if err != nil {
			if dropped > 0 {
				q <- chunk{dropped: dropped}
			}
			close(q)
			<-done
			return
		}
	}
}

func drain(rs ...io.Reader) {
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, r) }()
	}
	wg.Wait()
}

// statusFile reports write failures to the agent.
type statusFile struct {
	path string
	mu   sync.Mutex
	last string
}

func (s *statusFile) set(msg string) {
	if s.path == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if msg == s.last && msg != "" {
		return
	}
	s.last = msg
	tmp := s.path + ".tmp"
	if os.WriteFile(tmp, []byte(msg), 0o600) == nil {
		os.Rename(tmp, s.path)
	}
}

// rotator writes one stream into its live file and rotates it. Every name
// in the sandbox is resolved beneath dir; the time index and the rotation
// lock are in the host-only state directory.
type rotator struct {
	dir    *sandboxfs.Dir
	name   string // "stdout" or "stderr"
	state  string
	max    int64
	files  int
	status *statusFile
	retry  time.Duration // between attempts of a failing write
	// rename is dir.Rename; tests make it fail.
	rename func(oldName, newName string) error

	f         *os.File
	ino       uint64
	size      int64
	lineLen   int64 // bytes of the current, unfinished line in f
	failing   bool
	lastCheck int64    // the second the live file's name was last checked
	plan      []uint64 // a rotation under way: plan[k] is to end at name k+1

	lock      *os.File // the rotation lock, when it could be opened
	times     *os.File // the time index, when it could be opened
	lastTimed int64    // the second of the last index entry
}

// ChainLockPath is the flock that guards a stream's rotation: the writer
// takes it exclusive to shift the chain, readers shared to resolve it. It is
// in the host-only state directory, so a container can neither hold it nor
// point it at another container's lock.
func ChainLockPath(state, name string) string {
	return filepath.Join(state, name+".lock")
}

// TimesPath is a stream's time index, in the host-only state directory:
// lines "UNIXNANO INODE OFFSET", one at the first line boundary written in
// each new second, so that every byte from OFFSET of file INODE up to the
// next entry was written within that second. Readers use it for --since. It
// is compacted to the files kept at each rotation.
func TimesPath(state, name string) string {
	return filepath.Join(state, name+".times")
}

// OpenLive opens a stream's live file beneath dir for appending, creating
// it. If the container has put something else at the name (a symlink, a
// FIFO, a directory, a hard link), that is removed beneath the handle and a
// new file of gearbox's own is created: the logger never follows it.
func OpenLive(dir *sandboxfs.Dir, name string) (*os.File, error) {
	f, err := dir.OpenAppend(name, 0o640)
	if err == nil {
		return f, nil
	}
	if !errors.Is(err, sandboxfs.ErrUnsafePath) && !errors.Is(err, sandboxfs.ErrNotRegular) && !errors.Is(err, sandboxfs.ErrHardLinked) {
		return nil, err
	}
	if rerr := dir.RemoveAll(name); rerr != nil {
		return nil, fmt.Errorf("%w; removing what is there: %w", err, rerr)
	}
	return dir.Open(name, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o640)
}

func newRotator(dir *sandboxfs.Dir, name, state string, max int64, files int, st *statusFile) (*rotator, error) {
	w := &rotator{dir: dir, name: name, state: state, max: max, files: max1(files), status: st, retry: time.Second, rename: dir.Rename}
	f, err := OpenLive(dir, name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f, w.size, w.ino = f, fi.Size(), inodeOf(fi)
	w.lastCheck = time.Now().Unix()
	w.times, _ = os.OpenFile(TimesPath(state, name), os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
	w.lock, _ = os.OpenFile(ChainLockPath(state, name), os.O_CREATE|os.O_RDWR|syscall.O_CLOEXEC, 0o600)
	return w, nil
}

func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// chainName is the name of file k of the chain: stdout, stdout.1, …
func (w *rotator) chainName(k int) string {
	if k == 0 {
		return w.name
	}
	return w.name + "." + strconv.Itoa(k)
}

// inoAt is the inode at name beneath the handle (a link's own), or 0.
func (w *rotator) inoAt(name string) uint64 {
	fi, err := w.dir.Lstat(name)
	if err != nil {
		return 0
	}
	return inodeOf(fi)
}

// checkLive, once a second, makes sure the live file is still at its name:
// if the container removed it or put something else there, the logger
// makes a new file of its own, so that output is kept and readable.
func (w *rotator) checkLive(now time.Time) {
	if now.Unix() == w.lastCheck || w.plan != nil {
		return
	}
	w.lastCheck = now.Unix()
	if w.inoAt(w.name) == w.ino {
		return
	}
	f, err := OpenLive(w.dir, w.name)
	if err != nil {
		w.status.set(fmt.Sprintf("reopening %s: %v", w.name, err))
		return
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return
	}
	w.f.Close()
	w.f, w.size, w.ino, w.lineLen, w.lastTimed = f, fi.Size(), inodeOf(fi), 0, 0
}

// stamp records, at a line boundary, the first write of a new second.
func (w *rotator) stamp() {
	if w.times == nil || w.lineLen != 0 {
		return
	}
	now := time.Now()
	if sec := now.Unix(); sec != w.lastTimed {
		w.lastTimed = sec
		fmt.Fprintf(w.times, "%d %d %d\n", now.UnixNano(), w.ino, w.size)
	}
}

// compactTimes keeps the index entries of the files still in the chain. The
// index is host-only; it is still read line by line with a bounded line.
func (w *rotator) compactTimes() {
	if w.times == nil {
		return
	}
	keep := map[string]bool{}
	for k := 0; k < w.files; k++ {
		if ino := w.inoAt(w.chainName(k)); ino != 0 {
			keep[strconv.FormatUint(ino, 10)] = true
		}
	}
	path := TimesPath(w.state, w.name)
	in, err := os.Open(path)
	if err != nil {
		return
	}
	defer in.Close()
	tmp := path + ".tmp"
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return
	}
	bw := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 256), 256)
	for sc.Scan() {
		if f := bytes.Fields(sc.Bytes()); len(f) == 3 && keep[string(f[1])] {
			bw.Write(sc.Bytes())
			bw.WriteByte('\n')
		}
	}
	if bw.Flush() != nil || out.Close() != nil || os.Rename(tmp, path) != nil {
		os.Remove(tmp)
		return
	}
	w.times.Close()
	w.times, _ = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|syscall.O_CLOEXEC, 0o600)
}

func max1(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

func (w *rotator) close() {
	w.f.Close()
	if w.times != nil {
		w.times.Close()
	}
	if w.lock != nil {
		w.lock.Close()
	}
}

// lineBreak is "\n" when the file ends mid-line, so that a marker starts a
// line of its own.
func (w *rotator) lineBreak() string {
	if w.lineLen > 0 {
		return "\n"
	}
	return ""
}

// writeRetrying writes d, retrying every second while writes fail (a full
// disk): the block policy. Failures and recovery go to the status file.
func (w *rotator) writeRetrying(d []byte) {
	for len(d) > 0 {
		n, err := w.write(d)
		d = d[n:]
		if err == nil {
			if w.failing {
				w.failing = false
				w.status.set("")
			}
			continue
		}
		if !w.failing {
			w.failing = true
			fmt.Fprintf(os.Stderr, "gearbox-logger: %v (retrying every second)\n", err)
		}
		w.status.set(fmt.Sprintf("writing %s: %v (the container blocks until the write succeeds)", w.name, err))
		time.Sleep(w.retry)
	}
}

// write puts d into the files, rotating as needed, and returns how much of
// d it consumed.
func (w *rotator) write(d []byte) (int, error) {
	w.checkLive(time.Now())
	if w.max <= 0 {
		w.stamp()
		n, err := w.f.Write(d)
		w.size += int64(n)
		if k := bytes.LastIndexByte(d[:n], '\n'); k >= 0 {
			w.lineLen = int64(n - k - 1)
		} else {
			w.lineLen += int64(n)
		}
		return n, err
	}
	total := 0
	put := func(b []byte) error {
		w.stamp()
		n, err := w.f.Write(b)
		w.size += int64(n)
		total += n
		return err
	}
	for len(d) > 0 {
		if w.lineLen == 0 {
			if room := w.max - w.size; room > 0 {
				// All complete lines that fit go in one write.
				limit := min(int64(len(d)), room)
				if k := bytes.LastIndexByte(d[:limit], '\n'); k >= 0 {
					if err := put(d[:k+1]); err != nil {
						return total, err
					}
					d = d[k+1:]
					continue
				}
				// An unfinished line that fits starts here.
				if int64(len(d)) <= room {
					err := put(d)
					w.lineLen = int64(len(d))
					return total, err
				}
			}
			if w.size > 0 {
				if err := w.rotate(); err != nil {
					return total, err
				}
				continue
			}
		}
		// Inside a line (or a line that starts an empty file and is longer
		// than what is left): it may grow to max, then it is split.
		lineRoom := w.max - w.lineLen
		end := int64(len(d))
		nl := bytes.IndexByte(d, '\n')
		if nl >= 0 {
			end = int64(nl + 1)
		}
		if end <= lineRoom {
			if err := put(d[:end]); err != nil {
				return total, err
			}
			if nl >= 0 {
				w.lineLen = 0
			} else {
				w.lineLen += end
			}
			d = d[end:]
			continue
		}
		if err := put(d[:lineRoom]); err != nil {
			return total, err
		}
		n, err := w.f.Write([]byte(SplitMarker))
		w.size += int64(n)
		if err != nil {
			return total, err
		}
		w.lineLen = 0
		d = d[lineRoom:]
	}
	return total, nil
}

// rotate shifts stdout → stdout.1 → … and opens a new live file, under the
// rotation lock so that readers see the chain whole.
//
// It is resumable: the first attempt records which file is to move where
// (plan), and each attempt moves only what has not moved yet. A rotation
// that fails halfway (a rename refused) and is retried every second thus
// finishes the same shift instead of shifting the kept files again each
// time, which would drop one more kept file per retry.
func (w *rotator) rotate() error {
	if w.lock != nil {
		if err := syscall.Flock(int(w.lock.Fd()), syscall.LOCK_EX); err != nil {
			return err
		}
		defer syscall.Flock(int(w.lock.Fd()), syscall.LOCK_UN)
	}
	if w.plan == nil {
		w.plan = make([]uint64, max(w.files-1, 1))
		w.plan[0] = w.ino
		for k := 1; k < len(w.plan); k++ {
			// Only regular files are kept; what else the container put at a
			// kept file's name stays, to be replaced.
			if fi, err := w.dir.Lstat(w.chainName(k)); err == nil && fi.Mode().IsRegular() {
				w.plan[k] = inodeOf(fi)
			}
		}
	}
	if w.files <= 1 {
		if w.inoAt(w.name) == w.plan[0] {
			if err := w.dir.Remove(w.name); err != nil {
				return err
			}
		}
	} else {
		for k := len(w.plan) - 1; k >= 0; k-- {
			want, from, to := w.plan[k], w.chainName(k), w.chainName(k+1)
			if want == 0 || w.inoAt(to) == want || w.inoAt(from) != want {
				continue // nothing to move, moved already, or gone
			}
			err := w.rename(from, to)
			if err != nil && w.inoAt(to) != 0 {
				// The container may have put a directory at the name.
				if rerr := w.dir.RemoveAll(to); rerr == nil {
					err = w.rename(from, to)
				}
			}
			if err != nil {
				return err
			}
		}
	}
	f, err := w.dir.Open(w.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
	if errors.Is(err, os.ErrExist) {
		// Not ours (ours has moved): the container's; take the name back.
		if err = w.dir.RemoveAll(w.name); err == nil {
			f, err = w.dir.Open(w.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o640)
		}
	}
	if err != nil {
		return err
	}
	w.plan = nil
	w.f.Close()
	w.f, w.size, w.lineLen = f, 0, 0
	if fi, err := f.Stat(); err == nil {
		w.ino = inodeOf(fi)
	}
	w.lastTimed = 0 // the new file starts with an entry of its own
	w.compactTimes()
	return nil
}

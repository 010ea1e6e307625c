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
// SplitMarker. Rotation happens under an exclusive flock on .NAME.lock beside
// the file; readers take it shared to resolve the chain.
//
// Policies: mode "block" (default) never loses a line: when a write fails
// (a full disk) it retries every second, and the container blocks once the
// pipe is full. Mode "drop" never blocks the container: what does not fit in
// a 1 MiB buffer is dropped and a line says how many bytes were.
//
// The logger holds an exclusive flock on the "lock" file for its whole life
// (the agent probes it to notice a dead logger) and writes write failures
// into the "status" file (empty when all is well).
//
// It imports nothing heavy: one runs per container.
package shimlog

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
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
type Args struct {
	Stdout   string // file for the container's stdout
	Stderr   string // file for the container's stderr
	MaxSize  int64  // rotate at this size; 0: never
	MaxFiles int    // files kept per stream, the live one included
	Mode     string // block or drop
	Lock     string // held for the logger's life; optional
	Status   string // write failures are reported here; optional
}

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
		case "stdout":
			a.Stdout = v
		case "stderr":
			a.Stderr = v
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
		case "lock":
			a.Lock = v
		case "status":
			a.Status = v
		default:
			return a, fmt.Errorf("unknown argument %q", k)
		}
		if err != nil {
			return a, fmt.Errorf("argument %s %q: %v", k, v, err)
		}
	}
	if a.Stdout == "" || a.Stderr == "" {
		return a, errors.New("both stdout and stderr paths are required")
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
	if a.Lock != "" {
		if f, err := os.OpenFile(a.Lock, os.O_CREATE|os.O_RDWR, 0o600); err == nil {
			syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
			defer f.Close() // the lock goes with the process
		}
	}
	st := &statusFile{path: a.Status}
	st.set("")
	outW, err1 := newRotator(a.Stdout, a.MaxSize, a.MaxFiles, st)
	errW, err2 := newRotator(a.Stderr, a.MaxSize, a.MaxFiles, st)
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

// rotator writes one stream into its live file and rotates it.
type rotator struct {
	path     string
	max      int64
	files    int
	status   *statusFile
	lockPath string

	f       *os.File
	ino     uint64
	size    int64
	lineLen int64 // bytes of the current, unfinished line in f
	failing bool

	times     *os.File // the time index, when it could be opened
	lastTimed int64    // the second of the last index entry
}

// RotateLockPath is the flock that guards a stream's rotation.
func RotateLockPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".lock")
}

// TimesPath is a stream's time index: lines "UNIXNANO INODE OFFSET", one at
// the first line boundary written in each new second, so that every byte
// from OFFSET of file INODE up to the next entry was written within that
// second. Readers use it for --since. It is compacted to the files kept at
// each rotation.
func TimesPath(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".times")
}

func newRotator(path string, max int64, files int, st *statusFile) (*rotator, error) {
	w := &rotator{path: path, max: max, files: max1(files), status: st, lockPath: RotateLockPath(path)}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	w.f, w.size, w.ino = f, fi.Size(), inodeOf(fi)
	w.times, _ = os.OpenFile(TimesPath(path), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
	return w, nil
}

func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
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

// compactTimes keeps the index entries of the files still in the chain.
func (w *rotator) compactTimes() {
	if w.times == nil {
		return
	}
	keep := map[string]bool{}
	for k := 0; k < w.files; k++ {
		p := w.path
		if k > 0 {
			p = fmt.Sprintf("%s.%d", w.path, k)
		}
		if fi, err := os.Stat(p); err == nil {
			keep[strconv.FormatUint(inodeOf(fi), 10)] = true
		}
	}
	data, err := os.ReadFile(TimesPath(w.path))
	if err != nil {
		return
	}
	var out bytes.Buffer
	for _, line := range bytes.Split(data, []byte("\n")) {
		if f := bytes.Fields(line); len(f) == 3 && keep[string(f[1])] {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	tmp := TimesPath(w.path) + ".tmp"
	if os.WriteFile(tmp, out.Bytes(), 0o640) == nil && os.Rename(tmp, TimesPath(w.path)) == nil {
		w.times.Close()
		w.times, _ = os.OpenFile(TimesPath(w.path), os.O_WRONLY|os.O_APPEND, 0o640)
	}
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
		w.status.set(fmt.Sprintf("writing %s: %v (the container blocks until the write succeeds)", w.path, err))
		time.Sleep(time.Second)
	}
}

// write puts d into the files, rotating as needed, and returns how much of
// d it consumed.
func (w *rotator) write(d []byte) (int, error) {
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
func (w *rotator) rotate() error {
	lock, err := os.OpenFile(w.lockPath, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if w.files <= 1 {
		os.Remove(w.path)
	} else {
		for k := w.files - 1; k >= 2; k-- {
			os.Rename(fmt.Sprintf("%s.%d", w.path, k-1), fmt.Sprintf("%s.%d", w.path, k))
		}
		if err := os.Rename(w.path, w.path+".1"); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return err
	}
	w.f.Close()
	w.f, w.size, w.lineLen = f, 0, 0
	if fi, err := f.Stat(); err == nil {
		w.ino = inodeOf(fi)
	}
	w.lastTimed = 0 // the new file starts with an entry of its own
	w.compactTimes()
	return nil
}

// Package shimlog is the code behind the gearbox-logger binary: a containerd
// binary-logging plugin. The shim starts it before the container's task,
// passes the container's stdout on fd 3 and stderr on fd 4, and waits for fd
// 5 to be closed as the sign that the logger is ready. Arguments arrive as
// bare "key value" pairs in no fixed order.
//
// It keeps running whatever happens to the agent. When the task is deleted
// the shim sends SIGTERM and waits (12 s) for it to exit: the logger then
// drains both pipes to their end before exiting, so no line is lost and the
// files are complete once the task's Delete returns.
//
// It imports nothing heavy: one runs per container.
package shimlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Args are the logger's arguments.
type Args struct {
	Stdout string // file for the container's stdout
	Stderr string // file for the container's stderr
}

// ParseArgs reads "key value" pairs.
func ParseArgs(args []string) (Args, error) {
	var a Args
	if len(args)%2 != 0 {
		return a, fmt.Errorf("arguments must be key value pairs, got %d words", len(args))
	}
	for i := 0; i < len(args); i += 2 {
		k, v := args[i], args[i+1]
		switch k {
		case "stdout":
			a.Stdout = v
		case "stderr":
			a.Stderr = v
		default:
			return a, fmt.Errorf("unknown argument %q", k)
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
	// draining until the pipes end. SIGPIPE cannot happen on files but is
	// ignored all the same.
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
	status := Run(a, stdout, stderr, ready)
	return status
}

// Run copies the two streams into their files. ready, when not nil, is
// closed once the files are open.
func Run(a Args, stdout, stderr io.Reader, ready io.Closer) int {
	outF, err1 := openLog(a.Stdout)
	errF, err2 := openLog(a.Stderr)
	if ready != nil {
		ready.Close()
	}
	var wg sync.WaitGroup
	var failed sync.Once
	status := 0
	copyTo := func(f *os.File, openErr error, r io.Reader) {
		defer wg.Done()
		if openErr != nil {
			fmt.Fprintf(os.Stderr, "gearbox-logger: %v\n", openErr)
			failed.Do(func() { status = 1 })
			io.Copy(io.Discard, r)
			return
		}
		defer f.Close()
		buf := make([]byte, 64*1024)
		if _, err := io.CopyBuffer(onlyWriter{f}, r, buf); err != nil {
			// The default policy is to block rather than lose output, but a
			// failed write cannot block forever: report and keep draining.
			fmt.Fprintf(os.Stderr, "gearbox-logger: writing %s: %v\n", f.Name(), err)
			failed.Do(func() { status = 1 })
			io.Copy(io.Discard, r)
		}
	}
	wg.Add(2)
	go copyTo(outF, err1, stdout)
	go copyTo(errF, err2, stderr)
	wg.Wait()
	return status
}

func openLog(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
}

func drain(rs ...io.Reader) {
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, r) }()
	}
	wg.Wait()
}

// onlyWriter hides ReadFrom so that io.CopyBuffer uses our buffer rather
// than a splice path that can hold a partial write.
type onlyWriter struct{ io.Writer }

package checks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Env is how checks reach a container; the agent gives it.
type Env struct {
	// Exec runs args in the running container, as a debug exec does (its
	// namespaces and cgroup), writing its stdout and stderr to out, and
	// returns its exit status; it kills the command when ctx ends.
	Exec func(ctx context.Context, id string, args []string, out io.Writer) (int32, error)
	// Pid is the pid of the container's main process, 0 when it does not
	// run.
	Pid func(ctx context.Context, id string) (uint32, error)
}

// boundedBuffer keeps the first MaxOutput bytes written to it and drops the
// rest, so that a chatty check costs the agent nothing. A command that
// timed out may still be writing while its output is read: it locks.
type boundedBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	truncated bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := MaxOutput - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(room, len(p))])
	}
	if b.buf.Len()+len(p) > MaxOutput {
		b.truncated = true
	}
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.ToValidUTF8(b.buf.String(), "?")
	if b.truncated {
		s += " …(truncated)"
	}
	return s
}

// process is a container's main process as a check last saw it: its pid
// and the start time the kernel gave it, so that a reused pid is noticed.
type process struct {
	pid   uint32
	start uint64
}

// probe runs c once against container id and says whether it passed, with
// its output. ctx bounds it (the check's timeout).
func probe(ctx context.Context, env Env, id string, c Check, proc *process) (bool, string) {
	if c.Kind == Command {
		var out boundedBuffer
		code, err := env.Exec(ctx, id, c.Command, &out)
		switch {
		case ctx.Err() != nil:
			return false, fmt.Sprintf("timed out after %s; output: %s", c.Timeout, out.String())
		case err != nil:
			return false, "running the check: " + err.Error()
		case code != 0:
			return false, fmt.Sprintf("exit status %d: %s", code, out.String())
		}
		return true, out.String()
	}
	pid, err := env.Pid(ctx, id)
	if err != nil || pid == 0 {
		return false, fmt.Sprintf("%v: %v", ErrProcessGone, err)
	}
	if pid != proc.pid {
		start, err := procStart(pid)
		if err != nil {
			return false, fmt.Sprintf("%v: %v", ErrProcessGone, err)
		}
		*proc = process{pid: pid, start: start}
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(int(c.Port)))
	dial := func(ctx context.Context) (net.Conn, error) { return dialIn(ctx, *proc, addr) }
	if c.Kind == TCP {
		conn, err := dial(ctx)
		if err != nil {
			return false, fmt.Sprintf("connecting to %s: %v", addr, err)
		}
		conn.Close()
		return true, "connected to " + addr
	}
	return httpGet(ctx, c, addr, dial)
}

// httpGet makes the check's GET over a connection dialled in the
// container's network namespace, in the calling goroutine (no transport:
// one connection per check, Connection: close, nothing pooled). 200-399 is
// healthy; redirects are not followed; https is not verified (as Mesos).
func httpGet(ctx context.Context, c Check, addr string, dial func(context.Context) (net.Conn, error)) (bool, string) {
	url := c.Scheme + "://" + addr + c.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	req.Header.Set("User-Agent", "gearbox-health-check")
	req.Close = true
	conn, err := dial(ctx)
	if err != nil {
		return false, fmt.Sprintf("GET %s: %v", url, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if c.Scheme == "https" {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: "127.0.0.1"})
		if err := tc.HandshakeContext(ctx); err != nil {
			return false, fmt.Sprintf("GET %s: %v", url, err)
		}
		conn = tc
	}
	if err := req.Write(conn); err != nil {
		return false, fmt.Sprintf("GET %s: %v", url, err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 4096), req)
	if err != nil {
		return false, fmt.Sprintf("GET %s: %v", url, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	out := fmt.Sprintf("GET %s: %s", url, resp.Status)
	return resp.StatusCode >= 200 && resp.StatusCode < 400, out
}

// procStart is the start time (clock ticks after boot) of process pid: with
// the pid, it names one process for good.
func procStart(pid uint32) (uint64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command (which may hold spaces) start at field 3;
	// starttime is field 22.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// dialIn connects to addr from inside the network namespace of process p.
// A namespace that is the agent's own (a container on the host's network)
// needs no setns: one stat says so, and a reused pid changes nothing there.
// Otherwise the namespace is opened through /proc/PID/ns/net, then the
// process's start time is read again: if it changed, the pid was reused
// and the namespace is someone else's, and nothing is dialled. The dial
// runs on a locked OS thread moved into the namespace (the
// containernetworking ns package); the socket stays in that namespace
// whatever thread uses it next.
func dialIn(ctx context.Context, p process, addr string) (net.Conn, error) {
	var d net.Dialer
	path := fmt.Sprintf("/proc/%d/ns/net", p.pid)
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProcessGone, err)
	}
	if own, err := ownNetns(); err == nil && own == (nsID{st.Dev, st.Ino}) {
		return d.DialContext(ctx, "tcp", addr)
	}
	target, err := ns.GetNS(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrProcessGone, err)
	}
	defer target.Close()
	if start, err := procStart(p.pid); err != nil || start != p.start {
		return nil, fmt.Errorf("%w: pid %d is another process now", ErrProcessGone, p.pid)
	}
	var conn net.Conn
	err = target.Do(func(ns.NetNS) error {
		var err error
		conn, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil && conn == nil && errors.Is(err, unix.EPERM) {
		return nil, fmt.Errorf("entering the network namespace of pid %d (the agent needs CAP_SYS_ADMIN): %w", p.pid, err)
	}
	return conn, err
}

// nsID names a namespace: the device and inode of its nsfs file.
type nsID struct{ dev, ino uint64 }

var ownNS struct {
	once sync.Once
	id   nsID
	err  error
}

// ownNetns is the agent's own network namespace (its main thread's; the
// agent moves only locked threads, which it throws away).
func ownNetns() (nsID, error) {
	ownNS.once.Do(func() {
		var st unix.Stat_t
		ownNS.err = unix.Stat("/proc/self/ns/net", &st)
		ownNS.id = nsID{st.Dev, st.Ino}
	})
	return ownNS.id, ownNS.err
}

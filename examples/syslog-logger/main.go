// syslog-logger is an example of a custom gearbox container logger: any
// executable that speaks containerd's binary logging protocol can be one.
// It sends every line of a container's output as an RFC 5424 message to a
// syslog unix datagram socket (such as /dev/log): stdout at severity info,
// stderr at severity err.
//
// Configure it in the agent's config and choose it per container:
//
//	[loggers.syslog]
//	path = "/usr/local/bin/gearbox-syslog-logger"
//	args = { socket = "/dev/log", facility = "1" }
//
//	gearbox run --log-driver syslog IMAGE CMD…
//
// The protocol: the shim starts it with the container's stdout on fd 3 and
// stderr on fd 4, arguments as "key value" pairs, CONTAINER_ID and
// CONTAINER_NAMESPACE in the environment; it closes fd 5 once ready. When
// the task is deleted the shim sends SIGTERM: it keeps reading until both
// pipes end, so no line is lost.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// maxMessage keeps a datagram under common socket limits; longer lines are
// sent in pieces.
const maxMessage = 32 * 1024

func main() {
	signal.Ignore(syscall.SIGTERM, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGHUP)
	stdout, stderr, ready := os.NewFile(3, "stdout"), os.NewFile(4, "stderr"), os.NewFile(5, "ready")
	args := map[string]string{"facility": "1"}
	for i := 1; i+1 < len(os.Args); i += 2 {
		args[os.Args[i]] = os.Args[i+1]
	}
	facility, err := strconv.Atoi(args["facility"])
	if err != nil || facility < 0 || facility > 23 {
		fail(fmt.Errorf("facility %q: want 0-23", args["facility"]), ready, stdout, stderr)
	}
	if args["socket"] == "" {
		fail(fmt.Errorf("the socket argument is required"), ready, stdout, stderr)
	}
	conn, err := dial(args["socket"])
	if err != nil {
		fail(err, ready, stdout, stderr)
	}
	defer conn.Close()
	host, _ := os.Hostname()
	s := &sender{conn: conn, facility: facility, host: host,
		app: orDash(args["tag"], os.Getenv("CONTAINER_ID")), id: os.Getenv("CONTAINER_ID"), ns: os.Getenv("CONTAINER_NAMESPACE")}
	ready.Close()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); s.forward(stdout, "stdout", 6) }()
	go func() { defer wg.Done(); s.forward(stderr, "stderr", 3) }()
	wg.Wait()
}

func dial(path string) (net.Conn, error) {
	var err error
	for range 50 { // the syslog daemon may be restarting
		var c net.Conn
		if c, err = net.Dial("unixgram", path); err == nil {
			return c, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("connecting to %s: %w", path, err)
}

// fail reports, then drains both streams so that the container does not
// block, and exits when they end.
func fail(err error, ready io.Closer, rs ...io.Reader) {
	fmt.Fprintln(os.Stderr, "syslog-logger:", err)
	ready.Close()
	var wg sync.WaitGroup
	for _, r := range rs {
		wg.Add(1)
		go func() { defer wg.Done(); io.Copy(io.Discard, r) }()
	}
	wg.Wait()
	os.Exit(1)
}

type sender struct {
	mu                sync.Mutex
	conn              net.Conn
	facility          int
	host, app, id, ns string
}

func (s *sender) forward(r io.Reader, stream string, severity int) {
	br := bufio.NewReaderSize(r, maxMessage)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if line[len(line)-1] == '\n' {
				line = line[:len(line)-1]
			}
			s.send(stream, severity, line)
		}
		if err == bufio.ErrBufferFull {
			continue // the rest of a long line follows as the next message
		}
		if err != nil {
			return
		}
	}
}

// send writes one RFC 5424 message:
// <PRI>1 TIMESTAMP HOST APP - STREAM [gearbox@32473 container="ID" namespace="NS"] MSG
func (s *sender) send(stream string, severity int, msg []byte) {
	m := fmt.Sprintf("<%d>1 %s %s %s - %s [gearbox@32473 container=\"%s\" namespace=\"%s\"] %s",
		s.facility*8+severity, time.Now().UTC().Format(time.RFC3339Nano), orDash(s.host, ""), s.app, stream,
		sdEscape(s.id), sdEscape(s.ns), msg)
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if _, err := s.conn.Write([]byte(m)); err == nil || err != syscall.ENOBUFS {
			return
		}
		time.Sleep(10 * time.Millisecond) // the receiver is behind: block, do not drop
	}
}

func orDash(v, def string) string {
	if v != "" {
		return v
	}
	if def != "" {
		return def
	}
	return "-"
}

// sdEscape escapes a structured-data value (RFC 5424 §6.3.3).
func sdEscape(v string) string {
	out := make([]byte, 0, len(v))
	for i := 0; i < len(v); i++ {
		if v[i] == '"' || v[i] == '\\' || v[i] == ']' {
			out = append(out, '\\')
		}
		out = append(out, v[i])
	}
	return string(out)
}

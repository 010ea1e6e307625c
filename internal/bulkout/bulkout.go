// Package bulkout is the wire of a session's bulk output connection (see
// agent.v1 BulkOutput): a client opens a second connection to the agent's
// unix socket, writes Magic and the session's token, and reads the
// session's stdout from it, raw, until EOF. The agent tells such a
// connection from a gRPC one by its first byte: gRPC's starts with
// HTTP/2's preface ("PRI * HTTP/2.0…"), this one with Magic.
package bulkout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
)

// Magic opens a bulk output connection, before the token.
const Magic = "gearbox-bulk-output/1\n"

// TokenLen is the length of a session's token.
const TokenLen = 16

// IsBulk says whether a connection whose first byte is b is a bulk output
// connection (false: gRPC).
func IsBulk(b byte) bool { return b == Magic[0] }

// Dial opens the bulk output connection of the session whose token is
// token on the agent's unix socket at path. The caller reads the session's
// stdout from it until EOF, and closes it.
func Dial(ctx context.Context, path string, token []byte) (*net.UnixConn, error) {
	if len(token) != TokenLen {
		return nil, fmt.Errorf("bulk output token of %d bytes, not %d", len(token), TokenLen)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("opening the bulk output connection to %s: %w", path, err)
	}
	uc := c.(*net.UnixConn)
	uc.SetReadBuffer(4 << 20)
	if _, err := uc.Write(append([]byte(Magic), token...)); err != nil {
		uc.Close()
		return nil, fmt.Errorf("opening the bulk output connection to %s: %w", path, err)
	}
	uc.CloseWrite()
	return uc, nil
}

// Receiver copies a session's bulk output to a writer, from the moment the
// agent names the session's token (Start) to the connection's EOF (Wait).
type Receiver struct {
	path string
	w    io.Writer
	conn *net.UnixConn
	done chan struct{}
	n    int64
	err  error
}

// NewReceiver returns a Receiver for the agent whose unix socket is path.
func NewReceiver(path string, w io.Writer) *Receiver {
	return &Receiver{path: path, w: w}
}

// Start opens the bulk output connection with token and copies what it
// carries to the writer, in a goroutine of its own that Wait waits for.
func (r *Receiver) Start(ctx context.Context, token []byte) error {
	if r.done != nil {
		return errors.New("the agent named a second bulk output token")
	}
	uc, err := Dial(ctx, r.path, token)
	if err != nil {
		return err
	}
	r.conn, r.done = uc, make(chan struct{})
	go func() {
		defer close(r.done)
		defer uc.Close()
		r.n, r.err = copyOut(r.w, uc)
	}()
	return nil
}

// copyOut copies the connection to w: spliced when w is a file or a pipe
// (os.File.ReadFrom), else with large reads.
func copyOut(w io.Writer, uc *net.UnixConn) (int64, error) {
	if f, ok := w.(*os.File); ok {
		return io.Copy(f, uc)
	}
	return Copy(w, uc)
}

// Copy copies src to dst until EOF in reads of up to 1 MiB, whatever
// io.ReaderFrom or io.WriterTo they have.
func Copy(dst io.Writer, src io.Reader) (int64, error) {
	buf := make([]byte, 1<<20)
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			k, werr := dst.Write(buf[:n])
			total += int64(k)
			if werr != nil {
				return total, werr
			}
		}
		if errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Wait waits for the bulk output's EOF and returns how many bytes it
// carried; it returns at once when Start was not called. Call it once the
// session's exit frame has come: the output is complete when both have.
func (r *Receiver) Wait() (int64, error) {
	if r == nil || r.done == nil {
		return 0, nil
	}
	<-r.done
	if r.err != nil {
		return r.n, fmt.Errorf("reading the bulk output: %w", r.err)
	}
	return r.n, nil
}

// Close ends a copy under way (the session ended without its exit frame)
// and waits for it.
func (r *Receiver) Close() {
	if r == nil || r.done == nil {
		return
	}
	r.conn.Close()
	<-r.done
}

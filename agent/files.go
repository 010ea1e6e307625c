package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/containerd/errdefs"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/gearboxd/gearbox/containerizer"
	"github.com/gearboxd/gearbox/internal/sandboxfs"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// The sandbox files API (Mesos's LIST_FILES and READ_FILE). The sandbox is
// written by the container, so every path goes through sandboxfs: resolved
// by the kernel beneath the sandbox's handle, no symlink followed, nothing
// but a regular file opened for reading.
const (
	// maxListEntries bounds one ListFiles answer.
	maxListEntries = 10000
	// readChunk is the most data one ReadFileResponse carries (under gRPC's
	// 4 MiB default message limit; large, so a read is not bound by round trips).
	readChunk = 1 << 20
	// tailScan bounds how far back tail_lines looks for line starts.
	tailScan = 8 << 20
	// followPoll is how often a followed file is looked at for growth.
	followPoll = 200 * time.Millisecond
)

// sandboxPath checks a request's path: relative to the sandbox ("" and
// "." name the sandbox itself); an absolute path and ".." anywhere are
// refused rather than resolved, so no client can mean a host path.
func sandboxPath(p string) (string, error) {
	if len(p) >= unix.PathMax {
		return "", status.Errorf(codes.InvalidArgument, "path: %d bytes is longer than PATH_MAX (%d)", len(p), unix.PathMax)
	}
	if strings.IndexByte(p, 0) >= 0 {
		return "", status.Error(codes.InvalidArgument, "path: contains a NUL byte")
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", status.Errorf(codes.InvalidArgument, "path %q: \"..\" is refused: name a path inside the sandbox", p)
		}
	}
	if strings.HasPrefix(p, "/") {
		return "", status.Errorf(codes.InvalidArgument, "path %q is absolute: paths are relative to the sandbox (write stdout, not /stdout)", p)
	}
	if p == "" {
		return ".", nil
	}
	return path.Clean(p), nil
}

// openSandbox opens the sandbox of a container, or of a nested one
// (parent.child: containers/child in the parent's sandbox).
func (s *server) openSandbox(ctx context.Context, id string) (*sandboxfs.Dir, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	c, err := s.containers.Get(ctx, containerizer.ContainerID(id))
	if err == nil {
		return openSandboxDir(id, c.Sandbox, "")
	}
	parent, child, nested := cutLast(id, ".")
	if !errdefs.IsNotFound(err) || !nested {
		return nil, toStatus(err)
	}
	pc, perr := s.containers.Get(ctx, containerizer.ContainerID(parent))
	if perr != nil {
		return nil, toStatus(err)
	}
	return openSandboxDir(id, pc.Sandbox, "containers/"+child)
}

func cutLast(s, sep string) (before, after string, found bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+len(sep):], true
}

func openSandboxDir(id, sandbox, sub string) (*sandboxfs.Dir, error) {
	if sandbox == "" {
		return nil, status.Errorf(codes.FailedPrecondition, "container %s has no sandbox", id)
	}
	d, err := sandboxfs.OpenDir(sandbox)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, status.Errorf(codes.NotFound, "container %s: its sandbox is gone", id)
		}
		return nil, toStatus(err)
	}
	if sub == "" {
		return d, nil
	}
	defer d.Close()
	nd, err := d.Sub(sub)
	if err != nil {
		return nil, fileStatus(id, sub, err)
	}
	return nd, nil
}

// fileStatus turns a sandboxfs error into a status that names the path.
func fileStatus(id, p string, err error) error {
	code := codes.Internal
	why := err.Error()
	switch {
	case errors.Is(err, sandboxfs.ErrUnsafePath):
		code, why = codes.InvalidArgument, "it is or passes through a symlink, a mount point or \"..\"; only plain files and directories inside the sandbox can be read"
	case errors.Is(err, sandboxfs.ErrNotRegular):
		code, why = codes.InvalidArgument, "not a regular file (a FIFO, device, socket or directory); only regular files can be read"
	case errors.Is(err, sandboxfs.ErrNotDir):
		code, why = codes.InvalidArgument, "not a directory"
	case errors.Is(err, sandboxfs.ErrTooLarge):
		code, why = codes.ResourceExhausted, fmt.Sprintf("more than %d entries: list a subdirectory", maxListEntries)
	case errors.Is(err, fs.ErrNotExist):
		code, why = codes.NotFound, "no such file or directory in the sandbox"
	case errors.Is(err, unix.ENAMETOOLONG):
		code, why = codes.InvalidArgument, "a name is too long"
	case errors.Is(err, fs.ErrPermission):
		code = codes.PermissionDenied
	}
	return status.Errorf(code, "container %s: path %q: %s", id, p, why)
}

func fileInfo(p string, st *unix.Stat_t) *agentv1.FileInfo {
	return &agentv1.FileInfo{
		Path: p, Nlink: uint64(st.Nlink), Size: st.Size, Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
		Mtime: timestamppb.New(time.Unix(st.Mtim.Unix())),
	}
}

func (s *server) ListFiles(ctx context.Context, req *agentv1.ListFilesRequest) (*agentv1.ListFilesResponse, error) {
	p, err := sandboxPath(req.GetPath())
	if err != nil {
		return nil, err
	}
	d, err := s.openSandbox(ctx, req.GetContainerId())
	if err != nil {
		return nil, err
	}
	defer d.Close()
	resp := &agentv1.ListFilesResponse{}
	st, err := d.Describe(p)
	if err != nil {
		return nil, fileStatus(req.GetContainerId(), p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		// As ls and Mesos: a file lists as itself.
		resp.FileInfos = append(resp.FileInfos, fileInfo(p, &st))
		return resp, nil
	}
	es, err := d.ReadDir(p, maxListEntries)
	if err != nil {
		return nil, fileStatus(req.GetContainerId(), p, err)
	}
	for i := range es {
		resp.FileInfos = append(resp.FileInfos, fileInfo(path.Join(p, es[i].Name), &es[i].Stat))
	}
	return resp, nil
}

func (s *server) ReadFile(req *agentv1.ReadFileRequest, stream agentv1.Agent_ReadFileServer) error {
	p, err := sandboxPath(req.GetPath())
	if err != nil {
		return err
	}
	if req.GetOffset() < 0 || req.GetLength() < 0 || req.GetTailLines() < 0 {
		return status.Error(codes.InvalidArgument, "offset, length and tail_lines must not be negative")
	}
	ctx, done := s.gate.longCall(stream.Context())
	defer done()
	d, err := s.openSandbox(ctx, req.GetContainerId())
	if err != nil {
		return err
	}
	f, err := d.OpenRead(p)
	d.Close()
	if err != nil {
		return fileStatus(req.GetContainerId(), p, err)
	}
	defer f.Close()
	r := &fileReader{f: f, stream: stream, off: req.GetOffset(), left: -1}
	if req.Length != nil {
		r.left = req.GetLength()
	}
	if req.TailLines != nil {
		if r.off, err = tailOffset(f, int(req.GetTailLines())); err != nil {
			return toStatus(err)
		}
	}
	if !req.GetFollow() {
		return r.copyTo(r.size())
	}
	fctx, cancel := context.WithCancel(ctx)
	terminal := s.terminal(fctx, req.GetContainerId())
	err = r.follow(fctx, terminal)
	cancel()
	<-terminal // its goroutine has ended
	return s.gate.stoppingErr(err)
}

// terminal returns a channel closed once the container (or nested
// container) is terminal, or ctx has ended: its goroutine has then
// returned, so the caller waits for it by receiving.
func (s *server) terminal(ctx context.Context, id string) <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		_, err := s.containers.Wait(ctx, containerizer.ContainerID(id))
		if errdefs.IsNotFound(err) {
			s.execs.WaitNested(ctx, containerizer.ContainerID(id))
		}
	}()
	return ch
}

// fileReader streams a file from off, at most left bytes (< 0: no bound).
type fileReader struct {
	f      *os.File
	stream agentv1.Agent_ReadFileServer
	off    int64
	left   int64
	buf    []byte
}

func (r *fileReader) size() int64 {
	fi, err := r.f.Stat()
	if err != nil {
		return 0
	}
	return fi.Size()
}

// copyTo sends what lies between off and end (and within left); a file
// that shrank ends it early. It always sends at least one response, so a
// client learns the size.
func (r *fileReader) copyTo(end int64) error {
	if r.buf == nil {
		r.buf = make([]byte, readChunk)
	}
	sent := false
	for r.off < end && r.left != 0 {
		n := min(int64(len(r.buf)), end-r.off)
		if r.left > 0 {
			n = min(n, r.left)
		}
		got, err := r.f.ReadAt(r.buf[:n], r.off)
		if got > 0 {
			if serr := r.stream.Send(&agentv1.ReadFileResponse{Size: end, Offset: r.off, Data: r.buf[:got]}); serr != nil {
				return serr
			}
			sent = true
			r.off += int64(got)
			if r.left > 0 {
				r.left -= int64(got)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return toStatus(fmt.Errorf("read %s: %w", r.f.Name(), err))
		}
	}
	if !sent {
		return r.stream.Send(&agentv1.ReadFileResponse{Size: r.size(), Offset: r.off})
	}
	return nil
}

// follow sends what is there, then what is appended, until the container
// is terminal (and what it wrote is sent), left is spent, or ctx ends.
func (r *fileReader) follow(ctx context.Context, terminal <-chan struct{}) error {
	if err := r.copyTo(r.size()); err != nil {
		return err
	}
	t := time.NewTicker(followPoll)
	defer t.Stop()
	for r.left != 0 {
		ended := false
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-terminal:
			ended = true
		case <-t.C:
		}
		if end := r.size(); end > r.off {
			if err := r.copyTo(end); err != nil {
				return err
			}
		}
		if ended {
			return nil
		}
	}
	return nil
}

// tailOffset finds where the last n lines of f start, looking back at
// most tailScan bytes.
func tailOffset(f *os.File, n int) (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	end := fi.Size()
	start := max(0, end-tailScan)
	buf := make([]byte, end-start)
	got, err := f.ReadAt(buf, start)
	if err != nil && err != io.EOF {
		return 0, fmt.Errorf("read %s: %w", f.Name(), err)
	}
	buf = buf[:got]
	// A final newline ends the last line rather than starting another.
	i := len(buf)
	if n == 0 {
		return end, nil
	}
	if i > 0 && buf[i-1] == '\n' {
		i--
	}
	for ; n > 0; n-- {
		j := bytes.LastIndexByte(buf[:i], '\n')
		if j < 0 {
			return start, nil
		}
		i = j
	}
	return start + int64(i) + 1, nil
}

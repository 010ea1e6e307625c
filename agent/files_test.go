package agent

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gearboxd/gearbox/containerizer"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// filesServer is a test server with container c1 whose sandbox holds a
// log, a subdirectory, a FIFO and links to host files.
func filesServer(t *testing.T) (*testServer, string) {
	t.Helper()
	ts := newTestServer(t, ResourceSet{})
	sb := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(sb, "stdout"), []byte("one\ntwo\nthree\n"), 0o644))
	must(os.MkdirAll(filepath.Join(sb, "containers", "child"), 0o755))
	must(os.WriteFile(filepath.Join(sb, "containers", "child", "stdout"), []byte("nested\n"), 0o644))
	must(unix.Mkfifo(filepath.Join(sb, "fifo"), 0o644))
	must(os.Symlink("/etc/shadow", filepath.Join(sb, "shadow")))
	must(os.Symlink("/", filepath.Join(sb, "root")))
	ts.fake.put(containerizer.Container{ID: "c1", State: containerizer.TaskFinished, Sandbox: sb})
	return ts, sb
}

func readAll(t *testing.T, ts *testServer, req *agentv1.ReadFileRequest) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := ts.client.ReadFile(ctx, req)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return b.String(), nil
		}
		if err != nil {
			return b.String(), err
		}
		b.Write(m.GetData())
	}
}

func TestListFiles(t *testing.T) {
	ts, _ := filesServer(t)
	resp, err := ts.client.ListFiles(context.Background(), &agentv1.ListFilesRequest{ContainerId: "c1"})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*agentv1.FileInfo{}
	for _, fi := range resp.GetFileInfos() {
		got[fi.GetPath()] = fi
	}
	if fi := got["stdout"]; fi == nil || fi.GetSize() != 14 || fi.GetMode()&unix.S_IFMT != unix.S_IFREG {
		t.Errorf("stdout listed as %v, want a 14-byte regular file", fi)
	}
	if fi := got["shadow"]; fi == nil || fi.GetMode()&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("shadow listed as %v, want the symlink itself", fi)
	}
	sub, err := ts.client.ListFiles(context.Background(), &agentv1.ListFilesRequest{ContainerId: "c1", Path: "containers/child"})
	if err != nil || len(sub.GetFileInfos()) != 1 || sub.GetFileInfos()[0].GetPath() != "containers/child/stdout" {
		t.Errorf("ListFiles(containers/child) = %v, %v", sub, err)
	}
	nested, err := ts.client.ListFiles(context.Background(), &agentv1.ListFilesRequest{ContainerId: "c1.child"})
	if err != nil || len(nested.GetFileInfos()) != 1 || nested.GetFileInfos()[0].GetPath() != "stdout" {
		t.Errorf("ListFiles(c1.child) = %v, %v; want its own stdout", nested, err)
	}
}

func TestReadFile(t *testing.T) {
	ts, _ := filesServer(t)
	length := int64(3)
	tail := int32(2)
	for _, tc := range []struct {
		req  *agentv1.ReadFileRequest
		want string
	}{
		{&agentv1.ReadFileRequest{ContainerId: "c1", Path: "stdout"}, "one\ntwo\nthree\n"},
		{&agentv1.ReadFileRequest{ContainerId: "c1", Path: "stdout", Offset: 4, Length: &length}, "two"},
		{&agentv1.ReadFileRequest{ContainerId: "c1", Path: "stdout", TailLines: &tail}, "two\nthree\n"},
		{&agentv1.ReadFileRequest{ContainerId: "c1", Path: "stdout", Offset: 100}, ""},
		{&agentv1.ReadFileRequest{ContainerId: "c1.child", Path: "stdout"}, "nested\n"},
	} {
		got, err := readAll(t, ts, tc.req)
		if err != nil || got != tc.want {
			t.Errorf("ReadFile(%v) = %q, %v; want %q", tc.req, got, err, tc.want)
		}
	}
}

// Every path that could reach outside the sandbox, or hang the agent, is
// refused with a code and a message that says why.
func TestFilesRefused(t *testing.T) {
	ts, _ := filesServer(t)
	for _, tc := range []struct {
		id, path string
		code     codes.Code
		says     string
	}{
		{"c1", "../../etc/passwd", codes.InvalidArgument, `".."`},
		{"c1", "/etc/passwd", codes.InvalidArgument, "absolute"},
		{"c1", "shadow", codes.InvalidArgument, "symlink"},
		{"c1", "root/etc/shadow", codes.InvalidArgument, "symlink"},
		{"c1", "fifo", codes.InvalidArgument, "FIFO"},
		{"c1", "containers", codes.InvalidArgument, "regular file"},
		{"c1", strings.Repeat("a", 5000), codes.InvalidArgument, "PATH_MAX"},
		{"c1", "missing", codes.NotFound, "no such file"},
		{"nope", "stdout", codes.NotFound, "nope"},
		{"../x", "stdout", codes.InvalidArgument, ""},
	} {
		done := make(chan struct{})
		var err error
		go func() {
			defer close(done)
			_, err = readAll(t, ts, &agentv1.ReadFileRequest{ContainerId: tc.id, Path: tc.path})
		}()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Fatalf("ReadFile(%s:%s) hangs", tc.id, tc.path)
		}
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ReadFile(%s:%.40s) = %v, want %v saying %q", tc.id, tc.path, err, tc.code, tc.says)
		}
	}
	// A link lists as itself (as ls -d), never as what it points to.
	if r, err := ts.client.ListFiles(context.Background(), &agentv1.ListFilesRequest{ContainerId: "c1", Path: "root"}); err != nil ||
		len(r.GetFileInfos()) != 1 || r.GetFileInfos()[0].GetMode()&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("ListFiles(root) = %v, %v; want the link itself", r, err)
	}
	for _, p := range []string{"..", "/", "root/etc"} {
		if _, err := ts.client.ListFiles(context.Background(), &agentv1.ListFilesRequest{ContainerId: "c1", Path: p}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("ListFiles(%s) = %v, want InvalidArgument", p, err)
		}
	}
}

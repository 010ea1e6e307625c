package integration

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

func pull(t *testing.T, ref string, auth *agentv1.RegistryAuth) ([]*agentv1.LayerProgress, *agentv1.Image, error) {
	t.Helper()
	st, err := h.client.PullImage(ctxT(t), &agentv1.PullImageRequest{Image: ref, Auth: auth})
	if err != nil {
		return nil, nil, err
	}
	var progress []*agentv1.LayerProgress
	var done *agentv1.Image
	for {
		m, err := st.Recv()
		if err == io.EOF {
			return progress, done, nil
		}
		if err != nil {
			return progress, done, err
		}
		if p := m.GetProgress(); p != nil {
			progress = append(progress, p)
		}
		if d := m.GetDone(); d != nil {
			done = d
		}
	}
}

func TestPullFromRegistryWithCredentials(t *testing.T) {
	h.client.RemoveImage(ctxT(t), &agentv1.RemoveImageRequest{Image: h.pushedRef, Force: true})
	progress, img, err := pull(t, h.pushedRef, &agentv1.RegistryAuth{Username: regUser, Password: regPass})
	if err != nil {
		t.Fatal(err)
	}
	if img == nil || img.Name != h.pushedRef || !strings.HasPrefix(img.Digest, "sha256:") {
		t.Fatalf("done event: %v", img)
	}
	layers := map[string]string{}
	for _, p := range progress {
		layers[p.Digest] = p.Status
	}
	if len(layers) != 2 {
		t.Errorf("progress names %d layers, want the image's 2: %v", len(layers), layers)
	}
	for d, s := range layers {
		if s != "done" && s != "exists" {
			t.Errorf("layer %s ended %q", d, s)
		}
	}
	r := h.cli("run", "--rm", h.pushedRef, "cat", "/etc/gearbox-demo")
	if r.code != 0 || r.stdout != "built by gearbox from busybox-static\n" {
		t.Errorf("run pulled image: %s", r)
	}
}

// The CLI sends the credentials of the user's Docker config.
func TestCLIPullUsesDockerConfig(t *testing.T) {
	h.client.RemoveImage(ctxT(t), &agentv1.RemoveImageRequest{Image: h.pushedRef, Force: true})
	r := h.cli("image", "pull", h.pushedRef)
	if r.code != 0 || !strings.Contains(r.stdout, "pulled") {
		t.Fatalf("pull: %s", r)
	}
	// Not a terminal: plain lines, one per layer status, no escape codes.
	if strings.Contains(r.stdout, "\x1b[") || strings.Count(r.stdout, "\n") < 3 {
		t.Errorf("plain progress expected:\n%s", r.stdout)
	}
	if ls := h.cli("image", "ls"); !strings.Contains(ls.stdout, h.pushedRef) {
		t.Errorf("image ls:\n%s", ls.stdout)
	}
}

func TestPullFailures(t *testing.T) {
	_, _, err := pull(t, h.pushedRef, &agentv1.RegistryAuth{Username: regUser, Password: "wrong"})
	wantCode(t, err, codes.PermissionDenied, h.registry)
	_, _, err = pull(t, h.registry+"/gearbox/nothing-here:1", &agentv1.RegistryAuth{Username: regUser, Password: regPass})
	wantCode(t, err, codes.NotFound, "nothing-here")
	port, _ := freePort()
	unreachable := "127.0.0.1:" + itoa(port)
	_, _, err = pull(t, unreachable+"/x/y:1", nil)
	wantCode(t, err, codes.Unavailable, unreachable)
	_, _, err = pull(t, "Not A Reference", nil)
	wantCode(t, err, codes.InvalidArgument, "malformed")
	r := h.cli("image", "pull", unreachable+"/x/y:1")
	if r.code != 125 || !strings.Contains(r.stderr, "cannot reach registry "+unreachable) || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("CLI pull from unreachable registry: %s", r)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestImportArchives(t *testing.T) {
	// An OCI layout whose index names only "latest" takes --name.
	r := h.cli("image", "import", "--name", "localhost/from-oci", h.ociTar)
	if r.code != 0 || !strings.Contains(r.stdout, "localhost/from-oci:latest") {
		t.Fatalf("OCI import: %s", r)
	}
	if r := h.cli("run", "--rm", "localhost/from-oci", "cat", "/etc/gearbox-demo"); r.code != 0 {
		t.Errorf("run OCI-imported image: %s", r)
	}
	// From stdin.
	data, _ := os.ReadFile(h.dockerTar)
	if r := h.cliIn(string(data), "image", "import", "-"); r.code != 0 || !strings.Contains(r.stdout, testImage) {
		t.Errorf("import from stdin: %s", r)
	}
	if r := h.cli("image", "rm", "localhost/from-oci"); r.code != 0 {
		t.Errorf("image rm: %s", r)
	}
	if r := h.cli("image", "rm", "localhost/from-oci"); r.code != 125 || !strings.Contains(r.stderr, "not present") {
		t.Errorf("second image rm: %s", r)
	}
}

func TestImportRefusesBadArchives(t *testing.T) {
	garbage := t.TempDir() + "/garbage.tar"
	os.WriteFile(garbage, []byte(strings.Repeat("not a tar archive\n", 100)), 0o644)
	r := h.cli("image", "import", garbage)
	if r.code != 125 || !strings.Contains(r.stderr, "docker-archive") {
		t.Errorf("garbage: %s", r)
	}
	data, _ := os.ReadFile(h.dockerTar)
	truncated := t.TempDir() + "/truncated.tar"
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	r = h.cli("image", "import", truncated)
	if r.code != 125 || !strings.Contains(r.stderr, "truncated") {
		t.Errorf("truncated: %s", r)
	}
}

// spoolFiles lists the import spool files in the agent's work dir (and in
// its run dir, where they used to go).
func spoolFiles() []string {
	a, _ := filepath.Glob(filepath.Join(h.workDir(), "tmp", "import-*"))
	b, _ := filepath.Glob(filepath.Join(h.dir, "agent", "run", "tmp", "import-*"))
	return append(a, b...)
}

// waitSpool waits until the agent holds n spool files, all on the work
// dir's disk (run_dir is a tmpfs).
func waitSpool(t *testing.T, n int, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		inWork, _ := filepath.Glob(filepath.Join(h.workDir(), "tmp", "import-*"))
		if len(inWork) == n && len(spoolFiles()) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: spool files %v, want %d", what, spoolFiles(), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Issue 12, item 8: an import over import_max_size (64MiB in the harness,
// as the auth tests import an image holding the -race CLI) is refused naming the limit and leaves no spool file; more than
// max_imports (2) at once are refused; a client that hangs up leaves
// nothing; the agent answers throughout and imports again afterwards.
func TestImportBounds(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.tar")
	if err := os.WriteFile(big, make([]byte, 65<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	r := h.cli("image", "import", big)
	if r.code != 125 || !strings.Contains(r.stderr, "import_max_size") || !strings.Contains(r.stderr, "64MiB") {
		t.Errorf("import of 65MiB under a 64MiB limit: %s", r)
	}
	if left := spoolFiles(); len(left) != 0 {
		t.Errorf("the refused import left %v", left)
	}

	// Two uploads under way, held open by their clients.
	open := func(ctx context.Context) agentv1.Agent_ImportImageClient {
		st, err := h.client.ImportImage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Options{Options: &agentv1.ImportOptions{}}}); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Data{Data: make([]byte, 1<<20)}}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	ctx1, cancel1 := context.WithCancel(ctxT(t))
	defer cancel1()
	ctx2, cancel2 := context.WithCancel(ctxT(t))
	defer cancel2()
	open(ctx1)
	open(ctx2)
	waitSpool(t, 2, "two uploads under way")
	// A third is refused at once, saying which limit.
	st, err := h.client.ImportImage(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(h.dockerTar)
	st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Options{Options: &agentv1.ImportOptions{}}})
	st.Send(&agentv1.ImportImageRequest{Part: &agentv1.ImportImageRequest_Data{Data: data}})
	_, err = st.CloseAndRecv()
	wantCode(t, err, codes.ResourceExhausted, "max_imports")
	if r := h.cli("image", "import", h.dockerTar); r.code != 125 || !strings.Contains(r.stderr, "max_imports") {
		t.Errorf("CLI import while two are under way: %s", r)
	}
	if hr, err := h.client.GetHealth(ctxT(t), &agentv1.GetHealthRequest{}); err != nil || !hr.Healthy {
		t.Errorf("agent during the imports: %v %v", hr, err)
	}

	// The clients hang up: their spool files go and their slots free up.
	cancel1()
	cancel2()
	waitSpool(t, 0, "after the clients hung up")
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := h.cli("image", "import", h.dockerTar)
		if r.code == 0 {
			break
		}
		if time.Now().After(deadline) || !strings.Contains(r.stderr, "max_imports") {
			t.Fatalf("import after the cancelled ones: %s", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := spoolFiles(); len(left) != 0 {
		t.Errorf("a finished import left %v", left)
	}
}

package integration

import (
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

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

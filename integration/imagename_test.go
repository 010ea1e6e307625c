package integration

import (
	"strings"
	"testing"
)

// import --name REPO:TAG names the image exactly so, even when the archive
// tags it "latest"; image tag gives an image a further name that runs.
func TestImportNameAndTag(t *testing.T) {
	r := h.cli("image", "import", "--name", "bars/tool:oci", h.ociTar)
	if r.code != 0 || !strings.Contains(r.stdout, "docker.io/bars/tool:oci") {
		t.Fatalf("import --name bars/tool:oci: %s", r)
	}
	t.Cleanup(func() { h.cli("image", "rm", "bars/tool:oci", "bars/tool:2", "bars/tool") })
	ls := h.cli("image", "ls").stdout
	if !strings.Contains(ls, "docker.io/bars/tool:oci") || strings.Contains(ls, "docker.io/bars/tool:latest") {
		t.Errorf("image ls after import --name bars/tool:oci:\n%s", ls)
	}
	if r := h.cli("image", "import", "--name", "bars/tool@sha256:"+strings.Repeat("0", 64), h.ociTar); r.code != 125 || !strings.Contains(r.stderr, "digest") {
		t.Errorf("import --name with a digest: %s", r)
	}

	if r := h.cli("image", "tag", "bars/tool:oci", "bars/tool:2"); r.code != 0 || !strings.Contains(r.stdout, "docker.io/bars/tool:2") {
		t.Fatalf("image tag: %s", r)
	}
	if r := h.cli("run", "--rm", "bars/tool:2", "cat", "/etc/gearbox-demo"); r.code != 0 || !strings.Contains(r.stdout, "busybox-static") {
		t.Errorf("run the tagged image: %s", r)
	}
	if r := h.cli("image", "tag", "bars/missing:1", "bars/x:1"); r.code != 125 || !strings.Contains(r.stderr, "not present") {
		t.Errorf("tag of a missing image: %s", r)
	}
	if r := h.cli("image", "tag", "bars/tool:oci", "Not A Ref"); r.code != 125 || !strings.Contains(r.stderr, "malformed") {
		t.Errorf("tag to a malformed name: %s", r)
	}
}

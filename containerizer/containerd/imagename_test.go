package containerd

import (
	"testing"

	"github.com/containerd/errdefs"
)

func TestParseImportName(t *testing.T) {
	for _, tc := range []struct {
		in          string
		repo, exact string
		bad         bool
	}{
		{in: ""},
		{in: "bars/tool", repo: "docker.io/bars/tool"},
		{in: "bars/tool:oci", exact: "docker.io/bars/tool:oci"},
		{in: "localhost:5000/x:1", exact: "localhost:5000/x:1"},
		{in: "bars/tool@sha256:" + "0123456789012345678901234567890123456789012345678901234567890123", bad: true},
		{in: "Not A Ref", bad: true},
	} {
		got, err := parseImportName(tc.in)
		if tc.bad {
			if !errdefs.IsInvalidArgument(err) {
				t.Errorf("parseImportName(%q) = %v, want InvalidArgument", tc.in, err)
			}
			continue
		}
		if err != nil || got.repo != tc.repo || got.exact != tc.exact {
			t.Errorf("parseImportName(%q) = %+v, %v; want repo %q exact %q", tc.in, got, err, tc.repo, tc.exact)
		}
	}
}

func TestClassifyArchive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		files  map[string][]byte
		rootfs bool
		kind   archiveKind
		images int
	}{
		{"docker", map[string][]byte{"manifest.json": []byte(`[{},{}]`)}, false, archiveDocker, 2},
		{"oci", map[string][]byte{"index.json": []byte(`{"manifests":[{}]}`), "oci-layout": []byte(`{}`)}, false, archiveOCI, 1},
		{"docker with index", map[string][]byte{"index.json": []byte(`{"manifests":[{}]}`), "manifest.json": []byte(`[{}]`)}, false, archiveOCI, 1},
		{"aci", map[string][]byte{"manifest": []byte(`{}`)}, true, archiveACI, 1},
	} {
		info, err := classifyArchive(tc.files, tc.rootfs)
		if err != nil || info.kind != tc.kind || info.images != tc.images {
			t.Errorf("%s: %+v, %v; want kind %d with %d images", tc.name, info, err, tc.kind, tc.images)
		}
	}
	if _, err := classifyArchive(map[string][]byte{"manifest": []byte(`{}`)}, false); !errdefs.IsInvalidArgument(err) {
		t.Errorf("a manifest without rootfs/: %v, want InvalidArgument", err)
	}
}

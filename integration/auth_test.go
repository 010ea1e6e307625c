package integration

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/gearboxd/gearbox/internal/demoimage"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// opsGID is the group the harness's config makes operator (gid:64123):
// TestSupplementaryGroupRoles creates it, with a user in it.
const opsGID = 64123

// cliAs runs the CLI as a user with the given groups, as a login would.
func cliAs(uid, gid uint32, groups []uint32, args ...string) result {
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), args...)
	cmd.Env = []string{"GEARBOX_AGENT=unix://" + h.agentSock, "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code, errb = -1, strings.Builder{}
		errb.WriteString(err.Error())
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

// A user whose supplementary group is ops gets the operator role that
// operator = ["gid:<ops>"] grants, whatever its login group: it launches,
// and still may not exec (debug). (An unnamed peer gets the least role:
// TestUnixPeerRoles.)
func TestSupplementaryGroupRoles(t *testing.T) {
	for _, b := range []string{"groupadd", "useradd"} {
		if _, err := need(b, "passwd"); err != nil {
			t.Fatal(err)
		}
	}
	group, name := fmt.Sprintf("gbit-ops-%d", os.Getpid()), fmt.Sprintf("gbit-u-%d", os.Getpid())
	if g, err := user.LookupGroupId(strconv.Itoa(opsGID)); err == nil {
		t.Fatalf("gid %d is taken by group %s on this host: the harness's config names it as the test's ops group; remove it (groupdel %s)", opsGID, g.Name, g.Name)
	}
	run(t, "groupadd", "-g", strconv.Itoa(opsGID), group)
	t.Cleanup(func() { exec.Command("groupdel", group).Run() })
	// Login group nogroup (the socket's group, which no rule names), ops
	// supplementary.
	run(t, "useradd", "-M", "-N", "-g", "nogroup", "-G", group, "-s", "/usr/sbin/nologin", name)
	t.Cleanup(func() { exec.Command("userdel", name).Run() })
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	gids, err := u.GroupIds()
	if err != nil {
		t.Fatal(err)
	}
	var groups []uint32
	for _, g := range gids {
		n, _ := strconv.Atoi(g)
		groups = append(groups, uint32(n))
	}
	if gid == opsGID {
		t.Fatalf("the user's login group is ops; the test needs ops as a supplementary group only")
	}
	as := func(args ...string) result { return cliAs(uint32(uid), uint32(gid), groups, args...) }
	if r := as("run", "--rm", testImage, "echo", "launched by ops"); r.code != 0 || r.stdout != "launched by ops\n" {
		t.Fatalf("a member of ops (supplementary) could not launch: %s", r)
	}
	launch(t, "opsguarded", "sleep", "300")
	if r := as("exec", "opsguarded", "true"); r.code == 0 || !strings.Contains(r.stderr, "needs the debug role") || !strings.Contains(r.stderr, "has operator") {
		t.Errorf("a member of ops ran exec: %s", r)
	}
	// The same user without the ops group is only readonly.
	if r := cliAs(uint32(uid), uint32(gid), nil, "run", "--rm", testImage, "true"); r.code != 125 || !strings.Contains(r.stderr, "has readonly") {
		t.Errorf("without ops the user launched or got another role: %s", r)
	}
}

// A readonly caller sees a container's variable names, never their
// values; an operator sees them whole.
func TestEnvIsOperatorOnly(t *testing.T) {
	_, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: "secretive", Image: testImage, Env: []string{"DB_PASSWORD=hunter2-secret"},
		Cmd: &agentv1.StringList{Values: []string{"sleep", "300"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: "secretive", Force: true})
	})
	for _, args := range [][]string{{"inspect", "secretive"}, {"inspect", "-o", "json", "secretive"}, {"ps", "-o", "json"}} {
		r := cliAsNobody(args...)
		out := strings.NewReplacer(`\u003c`, "<", `\u003e`, ">").Replace(r.stdout) // JSON escapes < and >
		if r.code != 0 || strings.Contains(out, "hunter2") || !strings.Contains(out, "DB_PASSWORD=<redacted: operator only>") {
			t.Errorf("readonly %v:\n%s", args, r)
		}
	}
	if r := h.cli("inspect", "secretive"); r.code != 0 || !strings.Contains(r.stdout, "DB_PASSWORD=hunter2-secret") {
		t.Errorf("the operator does not see the environment: %s", r)
	}
}

// gearboxImage is the test image with a static gearbox binary at
// /gearbox: a container that speaks gRPC as a hostile one would. The
// harness's binaries are built with -race, so with cgo: this one is built
// apart, static, for the busybox image that has no libc.
func gearboxImage(t *testing.T) string {
	t.Helper()
	static := filepath.Join(t.TempDir(), "gearbox")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", static, "../cmd/gearbox")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building a static gearbox: %v\n%s", err, out)
	}
	bin, err := os.ReadFile(static)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "gearbox", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg})
	tw.Write(bin)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(h.img, layer)
	if err != nil {
		t.Fatal(err)
	}
	const ref = "localhost/gearbox-cli:1"
	path := filepath.Join(h.dir, "gearbox-cli.tar")
	if err := writeFile(path, func(f *os.File) error { return demoimage.WriteDockerArchive(f, img, ref) }); err != nil {
		t.Fatal(err)
	}
	if err := h.cliImport(path); err != nil {
		t.Fatal(err)
	}
	return ref
}

// A process in a container (which shares the host's network) cannot use
// the plaintext master's operator API, on its TCP port or its socket,
// while the CLI on the host can; against a master started --insecure the
// same container can, which shows it reaches the port.
func TestPlaintextMasterRefusesContainers(t *testing.T) {
	img := gearboxImage(t)
	m := startMasterProc(t)
	a := startClusterAgent(t, m, "mg1", "", false)
	id := a.agentID(t)
	if r := m.cli("agents"); r.code != 0 || !strings.Contains(r.stdout, id) {
		t.Fatalf("the host's CLI on the master's socket: %s", r)
	}
	if r := h.cli("run", "--rm", img, "/gearbox", "--master", m.listen, "agent", "mark-gone", id); r.code == 0 || !strings.Contains(r.stderr, "plaintext TCP") {
		t.Errorf("a container marked agent %s gone over TCP: %s", id, r)
	}
	if r := h.cli("run", "--rm", img, "/gearbox", "--master", m.addr, "agents"); r.code == 0 || strings.Contains(r.stdout, id) {
		t.Errorf("a container reached the master's socket: %s", r)
	}
	if r := m.cli("agents"); !strings.Contains(r.stdout, id) || strings.Contains(r.stdout, "GONE") {
		t.Errorf("after the container's attempts: %s", r)
	}
	// --insecure: the container reaches the same kind of port and is let in.
	mi := startMasterProc(t, "--insecure")
	if r := h.cli("run", "--rm", img, "/gearbox", "--master", mi.listen, "agents"); r.code != 0 {
		t.Errorf("a container could not reach an --insecure master's port (is the test's premise, host networking, wrong?): %s", r)
	}
}

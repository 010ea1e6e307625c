package integration

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/cio"

	"github.com/gearboxd/gearbox/internal/containerdproc"
	"github.com/gearboxd/gearbox/internal/demoimage"
	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

const (
	regUser = "gearbox"
	regPass = "s3cret-pass"
	// testImage is imported into the agent at start; pushedImage lives in
	// the registry only.
	testImage = "localhost/gearbox-test:1"
)

// harness is what TestMain starts for every test.
type harness struct {
	dir        string
	bin        string // dir with gearbox and gearbox-logger
	raceDir    string // race reports of the processes the tests start
	containerd *containerdproc.Proc
	namespace  string
	registry   string // host:port
	regCmd     *exec.Cmd
	pushedRef  string // image in the registry
	img        v1.Image
	dockerTar  string // docker-archive of img, named testImage
	ociTar     string // OCI layout of img, tagged only "latest"
	noCmdTar   string // docker-archive of an image with neither entrypoint nor cmd
	dockerCfg  string // DOCKER_CONFIG dir with the registry's credentials

	pluginSock  string
	pluginCmd   *exec.Cmd
	tlsDir      string
	tcpAddr     string
	syslogSock  string
	syslog      *syslogServer
	metricsAddr string

	// The network: a subnet, bridge and ports of this run's own, so that
	// runs (and gearbox dev) on one machine do not collide.
	cniSubnet, cniBridge string
	portsLo, portsHi     int

	agentCfg  string
	agentSock string
	agentLog  string
	agentCmd  *exec.Cmd
	agentDone chan error
	conn      *grpc.ClientConn
	client    agentv1.AgentClient
}

var h *harness

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests run real containers and need root: run make test as root")
		return 1
	}
	var err error
	h, err = setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration setup failed:", err)
		if h != nil {
			h.teardown()
			h.reportRaces(os.Stderr)
			h.removeDir()
		}
		return 1
	}
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- agent log (%s), last lines:\n%s\n", h.agentLog, tail(h.agentLog, 40))
	}
	h.teardown()
	if h.reportRaces(os.Stderr) {
		code = 1
	}
	h.removeDir()
	return code
}

// raceEnv makes every binary the tests start (agent, CLI, master, loggers,
// plugins: all built with -race and all inheriting the test's environment)
// write its race reports to a file of its own under dir, whatever becomes of
// its stderr. TestMain fails the run when any such file holds a report.
func raceEnv(dir string) string {
	return "GORACE=log_path=" + filepath.Join(dir, "race")
}

// reportRaces prints the race reports the children wrote and says whether
// there were any.
func (t *harness) reportRaces(w io.Writer) bool {
	files, _ := filepath.Glob(filepath.Join(t.raceDir, "race.*"))
	found := false
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("DATA RACE")) {
			continue
		}
		found = true
		fmt.Fprintf(w, "--- FAIL: a process the tests started reported a data race (%s):\n%s\n", f, b)
	}
	return found
}

func need(bin, pkg string) (string, error) {
	p, err := exec.LookPath(bin)
	if err != nil {
		return "", fmt.Errorf("%s is not installed: apt-get install %s (hack/install-deps.sh test does it)", bin, pkg)
	}
	return p, nil
}

func setup() (*harness, error) {
	for bin, pkg := range map[string]string{"containerd": "containerd", "runc": "runc", "containerd-shim-runc-v2": "containerd", "docker-registry": "docker-registry"} {
		if _, err := need(bin, pkg); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp("", "gearbox-it-")
	if err != nil {
		return nil, err
	}
	// Others may pass through (the unix-peer tests run the CLI as nobody).
	if err := os.Chmod(dir, 0o711); err != nil {
		return nil, err
	}
	t := &harness{dir: dir, bin: filepath.Join(dir, "bin"), raceDir: filepath.Join(dir, "race"), namespace: fmt.Sprintf("gearbox-it-%d", os.Getpid())}
	pid := os.Getpid()
	t.cniSubnet = fmt.Sprintf("10.%d.%d.0/24", 200+pid%50, (pid/50)%250)
	t.cniBridge = fmt.Sprintf("gbit%d", pid%1000000)
	t.portsLo = 40000 + (pid%200)*100
	t.portsHi = t.portsLo + 99
	ctx := context.Background()

	// Race reports of the children land here; the CLI also runs as nobody.
	if err := os.Mkdir(t.raceDir, 0o1777); err != nil {
		return t, err
	}
	if err := os.Chmod(t.raceDir, 0o777|os.ModeSticky); err != nil {
		return t, err
	}
	env := strings.SplitN(raceEnv(t.raceDir), "=", 2)
	os.Setenv(env[0], env[1])

	// Binaries, as make build makes them but with the race detector (not
	// under make bench: raceBinaries): the
	// agent's server, containerizer and sessions run only in these.
	for _, b := range []struct{ out, pkg string }{{"gearbox", "../cmd/gearbox"}, {"gearbox-logger", "../cmd/gearbox-logger"}, {"syslog-logger", "../examples/syslog-logger"}, {"disk-quota-isolator", "../examples/disk-quota-isolator"}, {"sleep-framework", "../examples/sleep-framework"}} {
		args := []string{"build", "-o", filepath.Join(t.bin, b.out)}
		if raceBinaries {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, b.pkg)...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return t, fmt.Errorf("building %s: %v\n%s", b.out, err, out)
		}
	}

	// Images, built locally.
	if t.img, err = demoimage.Build(demoimage.DefaultBusybox); err != nil {
		return t, err
	}
	t.dockerTar = filepath.Join(dir, "image-docker.tar")
	t.ociTar = filepath.Join(dir, "image-oci.tar")
	t.noCmdTar = filepath.Join(dir, "image-nocmd.tar")
	if err := writeFile(t.dockerTar, func(f *os.File) error { return demoimage.WriteDockerArchive(f, t.img, testImage) }); err != nil {
		return t, err
	}
	if err := writeFile(t.ociTar, func(f *os.File) error { return demoimage.WriteOCILayout(f, t.img, "latest") }); err != nil {
		return t, err
	}
	noCmd, err := withoutCmd(t.img)
	if err != nil {
		return t, err
	}
	if err := writeFile(t.noCmdTar, func(f *os.File) error { return demoimage.WriteDockerArchive(f, noCmd, "localhost/nocmd:1") }); err != nil {
		return t, err
	}

	if t.containerd, err = containerdproc.Start(ctx, filepath.Join(dir, "containerd")); err != nil {
		return t, err
	}
	if err := t.startRegistry(); err != nil {
		return t, err
	}
	t.syslogSock = filepath.Join(dir, "syslog.sock")
	if t.syslog, err = startSyslog(t.syslogSock); err != nil {
		return t, err
	}
	port, err := freePort()
	if err != nil {
		return t, err
	}
	t.metricsAddr = fmt.Sprintf("127.0.0.1:%d", port)
	t.pluginSock = filepath.Join(dir, "plugins", "disk-quota.sock")
	if err := t.startPlugin(); err != nil {
		return t, err
	}
	t.tlsDir = filepath.Join(dir, "tls")
	if err := makeCerts(t.tlsDir); err != nil {
		return t, err
	}
	if port, err = freePort(); err != nil {
		return t, err
	}
	t.tcpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	if err := t.startAgent(); err != nil {
		return t, err
	}
	if err := t.cliImport(t.dockerTar); err != nil {
		return t, err
	}
	return t, nil
}

func writeFile(path string, fn func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func withoutCmd(img v1.Image) (v1.Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config.Cmd, cf.Config.Entrypoint = nil, nil
	return mutate.ConfigFile(img, cf)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startRegistry runs Debian's docker-registry (distribution) on loopback
// with htpasswd auth, and pushes the test image to it.
func (t *harness) startRegistry() error {
	rdir := filepath.Join(t.dir, "registry")
	os.MkdirAll(filepath.Join(rdir, "data"), 0o755)
	hash, err := bcrypt.GenerateFromPassword([]byte(regPass), bcrypt.MinCost)
	if err != nil {
		return err
	}
	os.WriteFile(filepath.Join(rdir, "htpasswd"), []byte(regUser+":"+string(hash)+"\n"), 0o600)
	port, err := freePort()
	if err != nil {
		return err
	}
	t.registry = fmt.Sprintf("127.0.0.1:%d", port)
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s/data
  delete:
    enabled: true
http:
  addr: %s
auth:
  htpasswd:
    realm: gearbox-test
    path: %s/htpasswd
`, rdir, t.registry, rdir)
	os.WriteFile(filepath.Join(rdir, "config.yml"), []byte(cfg), 0o644)
	logf, _ := os.Create(filepath.Join(rdir, "registry.log"))
	t.regCmd = exec.Command("docker-registry", "serve", filepath.Join(rdir, "config.yml"))
	t.regCmd.Stdout, t.regCmd.Stderr = logf, logf
	t.regCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.regCmd.Start(); err != nil {
		return fmt.Errorf("starting docker-registry: %w", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + t.registry + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				break
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("registry on %s did not answer: %v\n%s", t.registry, err, tail(filepath.Join(rdir, "registry.log"), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.pushedRef = t.registry + "/gearbox/busybox:1"
	ref, err := name.NewTag(t.pushedRef, name.Insecure)
	if err != nil {
		return err
	}
	if err := remote.Write(ref, t.img, remote.WithAuth(&authn.Basic{Username: regUser, Password: regPass})); err != nil {
		return fmt.Errorf("pushing to the test registry: %w", err)
	}
	// A Docker config with the registry's credentials, for the CLI.
	t.dockerCfg = filepath.Join(t.dir, "docker-config")
	os.MkdirAll(t.dockerCfg, 0o700)
	auth := base64.StdEncoding.EncodeToString([]byte(regUser + ":" + regPass))
	return os.WriteFile(filepath.Join(t.dockerCfg, "config.json"), []byte(fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, t.registry, auth)), 0o600)
}

// writeAgentConfig writes the agent's config; extra is appended TOML.
func (t *harness) writeAgentConfig() error {
	adir := filepath.Join(t.dir, "agent")
	t.agentSock = filepath.Join(adir, "run", "agent.sock")
	t.agentCfg = filepath.Join(adir, "agent.toml")
	t.agentLog = filepath.Join(adir, "agent.log")
	cfg := fmt.Sprintf(`version = 1
containerd_address = %q
namespace = %q
work_dir = %q
run_dir = %q
listen = "unix://%s"
socket_group = "nogroup"
max_sessions = 3
# Small, so that TestImportBounds can go over it; the test images are ~2MB.
import_max_size = "64MiB"
max_imports = 2
resources = "cpus:2;mem:2048;ports:[%d-%d]"
cni_subnet = %q
cni_bridge = %q
cni_config_dir = %q
attributes = "rack:r1;zone:a"
logger_binary = %q
metrics_listen = %q
default_runtime = "runc"

[runtimes.runc]
type = "io.containerd.runc.v2"
binary = "runc"

# Any OCI runtime binary, by path.
[runtimes.runc-path]
type = "io.containerd.runc.v2"
binary = %q

[runtimes.missing-binary]
type = "io.containerd.runc.v2"
binary = "/nonexistent/oci-runtime"

[runtimes.missing-shim]
type = "io.containerd.nosuch.v1"

# The example custom logger.
[loggers.syslog]
path = %q
args = { socket = %q, tag = "gearbox-test" }

[tcp]
listen = %q
cert = %q
key = %q
client_ca = %q

# gid 64123: the ops group TestSupplementaryGroupRoles creates. nobody
# (gid 65534, the socket's group) is named by no rule: the default role.
[roles]
operator = ["cn:deployer", "gid:64123"]

# The test images are imported once, unused between tests: no image GC
# however full the machine's disk (TestImageGCOnSmallFilesystem runs its own).
[image_gc]
high_threshold = 100.0

# The example isolator plugin, required.
[[isolator_plugins]]
name = "disk-quota"
socket = %q
required = true
timeout = "2s"
`, t.containerd.Address, t.namespace, filepath.Join(adir, "work"), filepath.Join(adir, "run"),
		t.agentSock, t.portsLo, t.portsHi, t.cniSubnet, t.cniBridge, filepath.Join(adir, "cni"), filepath.Join(t.bin, "gearbox-logger"), t.metricsAddr, mustLookPath("runc"),
		filepath.Join(t.bin, "syslog-logger"), t.syslogSock,
		t.tcpAddr, filepath.Join(t.tlsDir, "agent.crt"), filepath.Join(t.tlsDir, "agent.key"), filepath.Join(t.tlsDir, "ca.crt"),
		t.pluginSock)
	os.MkdirAll(adir, 0o755)
	if err := writeCNIConfigs(filepath.Join(adir, "cni")); err != nil {
		return err
	}
	return os.WriteFile(t.agentCfg, []byte(cfg), 0o644)
}

func mustLookPath(b string) string {
	p, err := exec.LookPath(b)
	if err != nil {
		return b
	}
	return p
}

// startAgent starts the agent binary and waits until it serves.
func (t *harness) startAgent() error { return t.startAgentWith(nil, nil) }

// startAgentWith starts the agent with extra flags and environment.
func (t *harness) startAgentWith(args, env []string) error {
	if t.agentCfg == "" {
		if err := t.writeAgentConfig(); err != nil {
			return err
		}
	}
	logf, err := os.OpenFile(t.agentLog, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	t.agentCmd = exec.Command(filepath.Join(t.bin, "gearbox"), append([]string{"agent", "--config", t.agentCfg}, args...)...)
	t.agentCmd.Env = append(os.Environ(), env...)
	t.agentCmd.Stdout, t.agentCmd.Stderr = logf, logf
	t.agentCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.agentCmd.Start(); err != nil {
		return err
	}
	t.agentDone = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(t.agentCmd, t.agentDone)
	if t.conn == nil {
		conn, err := grpc.NewClient("unix://"+t.agentSock, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithReadBufferSize(256<<10), grpc.WithWriteBufferSize(256<<10)) // as the CLI's
		if err != nil {
			return err
		}
		t.conn, t.client = conn, agentv1.NewAgentClient(conn)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := t.client.GetHealth(ctx, &agentv1.GetHealthRequest{})
		cancel()
		if err == nil && r.Healthy {
			return nil
		}
		select {
		case err := <-t.agentDone:
			t.agentDone <- err
			return fmt.Errorf("agent exited at start (%v):\n%s", err, tail(t.agentLog, 30))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("agent did not become healthy: %v\n%s", err, tail(t.agentLog, 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopAgent sends sig to the agent and waits for it to exit.
func (t *harness) stopAgent(sig syscall.Signal) error {
	if t.agentCmd == nil || t.agentCmd.Process == nil {
		return nil
	}
	t.agentCmd.Process.Signal(sig)
	select {
	case err := <-t.agentDone:
		t.agentCmd = nil
		var ee *exec.ExitError
		if sig == syscall.SIGKILL && errors.As(err, &ee) {
			return nil
		}
		return err
	case <-time.After(20 * time.Second):
		t.agentCmd.Process.Kill()
		return errors.New("agent did not stop within 20s")
	}
}

// removeAll force-removes every container of an agent.
func removeAll(c agentv1.AgentClient, within time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if resp, err := c.GetContainers(ctx, &agentv1.GetContainersRequest{All: true}); err == nil {
		for _, ct := range resp.Containers {
			c.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: ct.Id, Force: true})
		}
	}
}

func (t *harness) teardown() {
	if t.client != nil {
		removeAll(t.client, 60*time.Second)
		t.conn.Close()
	}
	t.stopAgent(syscall.SIGTERM)
	// CNI's bridge plugin never removes its bridge; this run's goes with
	// it, so that runs leave no interface (or subnet) behind.
	if t.cniBridge != "" {
		exec.Command("ip", "link", "del", t.cniBridge).Run()
	}
	if t.syslog != nil {
		t.syslog.close()
	}
	t.stopPlugin()
	if t.regCmd != nil && t.regCmd.Process != nil {
		t.regCmd.Process.Kill()
		t.regCmd.Wait()
	}
	if t.containerd != nil {
		if err := t.containerd.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping containerd:", err)
		}
	}
}

func (t *harness) removeDir() {
	if os.Getenv("GEARBOX_KEEP_TEST_DIR") == "" {
		os.RemoveAll(t.dir)
	} else {
		fmt.Fprintln(os.Stderr, "test dir kept:", t.dir)
	}
}

// result is what a CLI run gave.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// cli runs the real gearbox CLI against the test agent.
func (t *harness) cliIn(stdin string, args ...string) result {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(t.bin, "gearbox"), args...)
	cmd.Env = append(os.Environ(), "GEARBOX_AGENT=unix://"+t.agentSock, "DOCKER_CONFIG="+t.dockerCfg)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (t *harness) cli(args ...string) result { return t.cliIn("", args...) }

// cliAsNobody runs the CLI as uid and gid 65534, whom no rule of the
// harness's config names: read-only on the unix socket by default.
func cliAsNobody(args ...string) result {
	cmd := exec.Command(filepath.Join(h.bin, "gearbox"), args...)
	cmd.Env = []string{"GEARBOX_AGENT=unix://" + h.agentSock, "HOME=/nonexistent", raceEnv(h.raceDir)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	}
	return result{stdout: out.String(), stderr: errb.String(), code: code}
}

func (t *harness) cliImport(path string, extra ...string) error {
	r := t.cli(append([]string{"image", "import"}, append(extra, path)...)...)
	if r.code != 0 {
		return fmt.Errorf("gearbox image import %s: %s", path, r)
	}
	return nil
}

func tail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ctxT is a context for one test step.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// syslogServer collects what the example syslog logger sends.
type syslogServer struct {
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	done chan struct{}
}

func startSyslog(path string) (*syslogServer, error) {
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	conn.SetReadBuffer(8 << 20)
	s := &syslogServer{conn: conn, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		buf := make([]byte, 64*1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			s.mu.Lock()
			s.msgs = append(s.msgs, string(buf[:n]))
			s.mu.Unlock()
		}
	}()
	return s, nil
}

func (s *syslogServer) messages() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.msgs...)
}

func (s *syslogServer) close() {
	s.conn.Close()
	<-s.done
}

// agentFails runs the agent expecting it to exit at start; it returns what
// the agent printed.
func (t *harness) agentFails(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(t.bin, "gearbox"), append([]string{"agent", "--config", t.agentCfg}, args...)...).CombinedOutput()
	if err == nil {
		return string(out), errors.New("the agent exited 0")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return string(out), err
	}
	return string(out), nil
}

// workDir is the agent's work dir.
func (t *harness) workDir() string { return filepath.Join(t.dir, "agent", "work") }

// ctrd is a containerd client on the test namespace, to act behind the
// agent's back.
func (t *harness) ctrd(tb testing.TB) *client.Client {
	c, err := client.New(t.containerd.Address, client.WithDefaultNamespace(t.namespace))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

var nullIO = cio.NullIO

// startPlugin runs the example disk-quota isolator plugin (64 MiB default
// quota) and waits for its socket.
func (t *harness) startPlugin() error {
	t.pluginCmd = exec.Command(filepath.Join(t.bin, "disk-quota-isolator"), "--socket", t.pluginSock, "--quota", "64m")
	t.pluginCmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := t.pluginCmd.Start(); err != nil {
		return err
	}
	for range 200 {
		if _, err := os.Stat(t.pluginSock); err == nil {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return errors.New("the disk-quota plugin did not create its socket")
}

func (t *harness) stopPlugin() {
	if t.pluginCmd != nil && t.pluginCmd.Process != nil {
		t.pluginCmd.Process.Kill()
		t.pluginCmd.Wait()
		t.pluginCmd = nil
	}
}

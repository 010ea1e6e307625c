package integration

// Hostile containers (issue 12): a container owns its sandbox and may put
// anything at any name gearbox uses there. Each case is a few lines of
// busybox sh run by the real agent and gearbox-logger; after each, nothing
// on the host outside the sandbox was created, written, removed or read
// back to a client, reads ended within their deadline and within a bound,
// a bystander container's logging went on, and the agent answers.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// canaryTime is the mtime of every canary: a write, a creation or a
// removal beneath one changes it.
var canaryTime = time.Date(2001, 2, 3, 4, 5, 6, 0, time.UTC)

const canaryMark = "CANARY-SECRET"

// canaries is a host directory a hostile container points gearbox at:
//
//	secret           three lines with canaryMark
//	dir/keep
//	dir/child/keep   where containers/child lands if containers → dir
//	dir/kid/keep
type canaries struct {
	dir  string
	want map[string]canaryEntry
}

type canaryEntry struct {
	mode  fs.FileMode
	size  int64
	mtime time.Time
	data  string
}

func newCanaries(t *testing.T) *canaries {
	t.Helper()
	dir, err := os.MkdirTemp(h.dir, "canary-")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{
		"secret":         fmt.Sprintf("%s 1 %s\n%s 2\n%s 3\n", canaryMark, dir, canaryMark, canaryMark),
		"dir/keep":       canaryMark + " keep\n",
		"dir/child/keep": canaryMark + " child\n",
		"dir/kid/keep":   canaryMark + " kid\n",
	}
	for rel, data := range files {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Children first, so that setting a file's time does not move its
	// directory's.
	var all []string
	filepath.WalkDir(dir, func(p string, _ fs.DirEntry, _ error) error { all = append(all, p); return nil })
	for i := len(all) - 1; i >= 0; i-- {
		if err := os.Chtimes(all[i], canaryTime, canaryTime); err != nil {
			t.Fatal(err)
		}
	}
	c := &canaries{dir: dir}
	c.want = c.scan(t)
	return c
}

func (c *canaries) scan(t *testing.T) map[string]canaryEntry {
	t.Helper()
	out := map[string]canaryEntry{}
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		e := canaryEntry{mode: fi.Mode(), size: fi.Size(), mtime: fi.ModTime()}
		if fi.Mode().IsRegular() && fi.Size() < 1<<20 {
			b, _ := os.ReadFile(p)
			e.data = string(b)
		}
		rel, _ := filepath.Rel(c.dir, p)
		out[rel] = e
		return nil
	})
	if err != nil {
		t.Errorf("scanning the canaries: %v", err)
	}
	return out
}

// check fails the test for every canary written, created or removed.
func (c *canaries) check(t *testing.T) {
	t.Helper()
	got := c.scan(t)
	for rel, w := range c.want {
		g, ok := got[rel]
		switch {
		case !ok:
			t.Errorf("host canary %s was removed", filepath.Join(c.dir, rel))
		case g != w:
			t.Errorf("host canary %s was changed: %v %d bytes %v %q, was %v %d bytes %v", filepath.Join(c.dir, rel), g.mode, g.size, g.mtime, clipS(g.data, 80), w.mode, w.size, w.mtime)
		}
	}
	for rel := range got {
		if _, ok := c.want[rel]; !ok {
			t.Errorf("host file %s was created", filepath.Join(c.dir, rel))
		}
	}
}

func clipS(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// maxLogRead bounds what a test reads back: a reader that follows a
// planted /dev/zero or a sparse file of many GiB never ends by itself.
const maxLogRead = 32 << 20

var errUnbounded = errors.New("ReadLogs returned more than 32 MiB from a container whose logger keeps at most max-size × max-files (3 MiB here): an unbounded read of what the container planted")

// readLogs reads a container's logs back as a client does, within a
// deadline and a bound; it returns what came per stream.
func readLogs(id string, req *agentv1.ReadLogsRequest) (map[agentv1.Stream]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req.ContainerId = id
	st, err := h.client.ReadLogs(ctx, req)
	if err != nil {
		return nil, err
	}
	out := map[agentv1.Stream]*strings.Builder{agentv1.Stream_STREAM_STDOUT: {}, agentv1.Stream_STREAM_STDERR: {}}
	total := 0
	for {
		r, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("ReadLogs did not end within 20 s (a hang on a FIFO or a lock?): %w", err)
			}
			return nil, err
		}
		total += len(r.Data)
		if total > maxLogRead {
			return nil, errUnbounded
		}
		if b := out[r.Stream]; b != nil {
			b.Write(r.Data)
		}
	}
	return map[agentv1.Stream]string{
		agentv1.Stream_STREAM_STDOUT: out[agentv1.Stream_STREAM_STDOUT].String(),
		agentv1.Stream_STREAM_STDERR: out[agentv1.Stream_STREAM_STDERR].String(),
	}, nil
}

// readLogsEveryWay reads logs whole, by tail and by time (which uses the
// time index), and fails the test if any read hangs, is unbounded, or
// returns canary content. It returns the whole read and its error.
func readLogsEveryWay(t *testing.T, id string) (map[agentv1.Stream]string, error) {
	t.Helper()
	var first map[agentv1.Stream]string
	var firstErr error
	tail := int32(20)
	for i, req := range []*agentv1.ReadLogsRequest{
		{},
		{TailLines: &tail},
		{Since: timestamppb.New(time.Now().Add(-time.Hour))},
	} {
		got, err := readLogs(id, req)
		if errors.Is(err, errUnbounded) || (err != nil && strings.Contains(err.Error(), "did not end")) {
			t.Errorf("logs of %s (read %d): %v", id, i, err)
		}
		for s, data := range got {
			if strings.Contains(data, canaryMark) {
				t.Errorf("logs of %s (read %d, %v) returned host canary content: %q", id, i, s, clipS(data[strings.Index(data, canaryMark):], 120))
			}
		}
		if i == 0 {
			first, firstErr = got, err
		}
	}
	return first, firstErr
}

// agentAnswers fails the test when the agent does not answer at once.
func agentAnswers(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := h.client.GetHealth(ctx, &agentv1.GetHealthRequest{}); err != nil || !r.Healthy {
		t.Errorf("the agent does not answer: %v %v", r, err)
	}
	if _, err := h.client.GetContainers(ctx, &agentv1.GetContainersRequest{All: true}); err != nil {
		t.Errorf("the agent does not list containers: %v", err)
	}
}

// bystander is a well-behaved container logging a counter beside the
// hostile ones.
type bystander struct {
	id      string
	sandbox string
}

func startBystander(t *testing.T, id string) *bystander {
	c := launchLogged(t, id, &agentv1.LogOptions{Driver: "logrotate", MaxSize: 4096, MaxFiles: 3},
		"sh", "-c", `i=0; while :; do i=$((i+1)); echo $i; sleep 0.01; done`)
	b := &bystander{id: id, sandbox: c.Sandbox}
	b.last(t)
	return b
}

// last checks the bystander's recent output (only its own numbers, in
// order) and that it is not reported degraded; it returns its last number.
func (b *bystander) last(t *testing.T) int {
	t.Helper()
	tail := int32(100)
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, err := readLogs(b.id, &agentv1.ReadLogsRequest{Streams: []agentv1.Stream{agentv1.Stream_STREAM_STDOUT}, TailLines: &tail})
		if err != nil {
			t.Errorf("bystander %s: reading its logs: %v", b.id, err)
			return 0
		}
		lines := strings.Split(strings.TrimSuffix(got[agentv1.Stream_STREAM_STDOUT], "\n"), "\n")
		if len(lines) >= 2 {
			prev := -1
			for _, l := range lines {
				n, err := strconv.Atoi(l)
				if err != nil || (prev >= 0 && n != prev+1) {
					t.Errorf("bystander %s: its output is disturbed: %q after %d", b.id, clipS(l, 80), prev)
					return 0
				}
				prev = n
			}
			if d := inspect(t, b.id).LoggingDegraded; d != "" {
				t.Errorf("bystander %s: logging degraded: %s", b.id, d)
			}
			return prev
		}
		if time.Now().After(deadline) {
			t.Fatalf("bystander %s printed nothing within 10 s", b.id)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// progresses fails the test unless the bystander printed more since from.
func (b *bystander) progresses(t *testing.T, from int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := b.last(t)
		if n > from || t.Failed() {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("bystander %s: its output stalled at %d", b.id, from)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launchHostile launches a container running script with $S its sandbox,
// $C the canary directory and $B the bystander's sandbox (host paths).
func launchHostile(t *testing.T, id string, log *agentv1.LogOptions, script string, env ...string) *agentv1.Container {
	t.Helper()
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Log: log,
		Cmd: &agentv1.StringList{Values: []string{"sh", "-c", "S=$GEARBOX_SANDBOX\n" + script}},
		Env: env,
		// Sparse files of many GiB are part of the attack, not a quota test.
		Labels: map[string]string{"disk-quota": "1t"},
	})
	if err != nil {
		t.Fatalf("launch %s: %v", id, err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	})
	return resp.Container
}

// endOrReport waits for a hostile container to exit; one that stalls (its
// logger blocked on what it planted) must have been reported degraded.
func endOrReport(t *testing.T, id string, within time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	if _, err := h.client.WaitContainer(ctx, &agentv1.WaitContainerRequest{ContainerId: id}); err == nil {
		return
	}
	d := inspect(t, id).LoggingDegraded
	t.Logf("%s stalled; logging degraded: %q", id, d)
	if d == "" {
		t.Errorf("%s stalled for %v and nothing reports its logging degraded", id, within)
	}
	kctx, kcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer kcancel()
	h.client.KillContainer(kctx, &agentv1.KillContainerRequest{ContainerId: id, Signal: "KILL"})
	h.client.WaitContainer(kctx, &agentv1.WaitContainerRequest{ContainerId: id})
}

// A plant puts something hostile at name $n (relative to $S).
var plants = []struct{ kind, sh string }{
	{"symlink-secret", `ln -s "$C/secret" "$S/$n"`},
	{"symlink-create", `ln -s "$C/new.$(basename "$n")" "$S/$n"`},
	{"symlink-dir", `ln -s "$C/dir" "$S/$n"`},
	{"symlink-bystander", `ln -s "$B/$(basename "$n")" "$S/$n"`},
	{"fifo", `mkfifo "$S/$n"`},
	{"directory", `mkdir -p "$S/$n/x"`},
	{"hardlink", `ln "$S/stdout" "$S/$n" || ln "$S/stderr" "$S/$n"`},
	{"huge", `truncate -s 20G "$S/$n"`},
	{"devzero", `ln -s /dev/zero "$S/$n"`},
}

// The names gearbox-logger uses in a sandbox: the live files, and the
// rotated files and bookkeeping beside them.
var (
	liveNames  = []string{"stdout", "stderr"}
	otherNames = []string{"stdout.1", "stdout.2", "stderr.1", ".stdout.times", ".stdout.times.tmp", ".stdout.lock", ".stderr.times", ".stderr.lock"}
)

func plantScript(sh string, names []string) string {
	return fmt.Sprintf("plant() { n=$1; rm -rf \"$S/$n\"; %s; }\nplantall() { for n in %s; do plant $n; done 2>/dev/null; }\n", sh, strings.Join(names, " "))
}

// TestHostileSandbox plants every kind of hostile entry at the names
// gearbox-logger uses, once during normal output (no rotation) and in a
// loop while rotation happens every kilobyte.
func TestHostileSandbox(t *testing.T) {
	by := startBystander(t, "hostile-bystander")
	for _, race := range []bool{false, true} {
		for _, group := range []struct {
			name  string
			names []string
		}{{"live", liveNames}, {"others", otherNames}} {
			for _, p := range plants {
				name := fmt.Sprintf("%s-%s", group.name, p.kind)
				if race {
					name += "-race"
				}
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					hostileCase(t, by, "h-"+name, plantScript(p.sh, group.names), group.name == "others", race)
				})
			}
		}
	}
}

func hostileCase(t *testing.T, by *bystander, id, plant string, ownLogsKept, race bool) {
	can := newCanaries(t)
	before := by.last(t)
	var script string
	var log *agentv1.LogOptions
	if race {
		// The planter races the rotation for a few seconds.
		log = &agentv1.LogOptions{Driver: "logrotate", MaxSize: 1024, MaxFiles: 3}
		script = plant + `echo first
(while [ ! -e /tmp/stop ]; do plantall; done) &
for r in $(seq 1 30); do seq 1 100 | sed "s/^/out-$r-/"; seq 1 20 | sed "s/^/err-$r-/" >&2; sleep 0.1; done
touch /tmp/stop; wait
echo out-end`
	} else {
		log = &agentv1.LogOptions{Driver: "logrotate", MaxSize: 1 << 20, MaxFiles: 3}
		script = plant + `echo first
plantall
seq 1 200 | sed "s/^/out-/"; seq 1 200 | sed "s/^/err-/" >&2
echo out-end`
	}
	launchHostile(t, id, log, script, "C="+can.dir, "B="+by.sandbox)
	endOrReport(t, id, 45*time.Second)
	got, err := readLogsEveryWay(t, id)
	if ownLogsKept && !race {
		// Only bookkeeping and rotated names were attacked: the live files
		// hold the container's output, which reads back whole, or the
		// failure is said.
		var want strings.Builder
		want.WriteString("first\n")
		for i := 1; i <= 200; i++ {
			fmt.Fprintf(&want, "out-%d\n", i)
		}
		want.WriteString("out-end\n")
		switch {
		case err != nil:
			t.Logf("logs of %s: %v (a failure reported, not wrong output)", id, err)
		case got[agentv1.Stream_STREAM_STDOUT] != want.String():
			t.Errorf("logs of %s: stdout is not what the container printed (%d bytes, want %d): %q", id, len(got[agentv1.Stream_STREAM_STDOUT]), want.Len(), clipS(got[agentv1.Stream_STREAM_STDOUT], 200))
		}
	}
	if err != nil {
		t.Logf("logs of %s: %v", id, err)
	}
	can.check(t)
	agentAnswers(t)
	by.progresses(t, before)
}

// nestedLaunch launches parent.child running args; err when refused.
func nestedLaunch(ctx context.Context, id string, args ...string) (*agentv1.NestedContainer, error) {
	resp, err := h.client.LaunchNestedContainer(ctx, &agentv1.LaunchNestedContainerRequest{ContainerId: id, Command: args})
	return resp.GetContainer(), err
}

// nestedRun runs a nested container to its end.
func nestedRun(t *testing.T, id, script string) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := nestedLaunch(ctx, id, "sh", "-c", "S=$GEARBOX_SANDBOX\n"+script); err != nil {
		t.Fatalf("nested %s: %v", id, err)
	}
	if _, err := h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("waiting for nested %s: %v", id, err)
	}
}

// TestHostileNestedContainers: a parent plants links where its nested
// containers' directories (containers/CHILD/) go, before and while they
// run, and while they are launched and removed in a loop.
func TestHostileNestedContainers(t *testing.T) {
	by := startBystander(t, "hostile-nested-bystander")
	for _, tc := range []struct {
		name, plant string
		child       string // launched after the plant, then removed
	}{
		{"containers-is-a-link", `rm -rf "$S/containers"; ln -s "$C/dir" "$S/containers"`, "child"},
		{"child-is-a-link", `mkdir -p "$S/containers"; rm -rf "$S/containers/kid"; ln -s "$C/dir/kid" "$S/containers/kid"`, "kid"},
		{"child-files-are-links", `mkdir -p "$S/containers/kid"; ln -s "$C/secret" "$S/containers/kid/stdout"; mkfifo "$S/containers/kid/stderr"; ln -s "$C/new" "$S/containers/kid/.stdout.times"`, "kid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			can := newCanaries(t)
			before := by.last(t)
			parent := "hn-" + tc.name
			launchHostile(t, parent, nil, "sleep 300")
			nestedRun(t, parent+".plant", "C="+can.dir+"\n"+tc.plant)
			ctx := ctxT(t)
			child := parent + "." + tc.child
			if _, err := nestedLaunch(ctx, child, "sh", "-c", "echo nested-out; echo nested-err >&2"); err != nil {
				t.Logf("nested launch refused: %v", err)
			} else {
				if _, err := h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: child}); err != nil {
					t.Errorf("waiting for %s: %v", child, err)
				}
				readLogsEveryWay(t, child)
				if _, err := h.client.RemoveNestedContainer(ctx, &agentv1.RemoveNestedContainerRequest{ContainerId: child, Force: true}); err != nil {
					t.Logf("removing %s: %v", child, err)
				}
			}
			can.check(t)
			// Removing the parent removes its sandbox without crossing the
			// links in it.
			if _, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: parent, Force: true}); err != nil {
				t.Errorf("removing %s: %v", parent, err)
			}
			can.check(t)
			agentAnswers(t)
			by.progresses(t, before)
		})
	}

	// A child's directory swapped for a link while it runs, then removed.
	t.Run("child-swapped-while-running", func(t *testing.T) {
		can := newCanaries(t)
		parent := "hn-swap"
		launchHostile(t, parent, &agentv1.LogOptions{Driver: "logrotate", MaxSize: 1024, MaxFiles: 3}, "sleep 300")
		ctx := ctxT(t)
		child := parent + ".child"
		if _, err := nestedLaunch(ctx, child, "sh", "-c", "sleep 1; seq 1 2000"); err != nil {
			t.Fatal(err)
		}
		nestedRun(t, parent+".swap", "C="+can.dir+"\n"+`mv "$S/containers/child" "$S/containers/child.old"; ln -s "$C/dir/child" "$S/containers/child"`)
		if _, err := h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: child}); err != nil {
			t.Errorf("waiting for %s: %v", child, err)
		}
		readLogsEveryWay(t, child)
		h.client.RemoveNestedContainer(ctx, &agentv1.RemoveNestedContainerRequest{ContainerId: child, Force: true})
		can.check(t)
		agentAnswers(t)
	})

	// containers/ flips between a directory and a link while nested
	// containers are launched, read and removed in a loop.
	t.Run("race", func(t *testing.T) {
		can := newCanaries(t)
		before := by.last(t)
		parent := "hn-race"
		launchHostile(t, parent, nil, "sleep 300")
		ctx := ctxT(t)
		if _, err := nestedLaunch(ctx, parent+".flip", "sh", "-c", "S=$GEARBOX_SANDBOX; C="+can.dir+`
end=$(( $(date +%s) + 4 ))
while [ $(date +%s) -lt $end ]; do
  rm -rf "$S/containers.d"; mv "$S/containers" "$S/containers.d" 2>/dev/null
  ln -s "$C/dir" "$S/containers"; rm -f "$S/containers"; mkdir -p "$S/containers"
  ln -s "$C/dir/child" "$S/containers/child" 2>/dev/null; ln -s "$C/dir/kid" "$S/containers/kid" 2>/dev/null
done`); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(4 * time.Second)
		launched := 0
		for i := 0; time.Now().Before(deadline); i++ {
			child := fmt.Sprintf("%s.%s", parent, []string{"child", "kid"}[i%2])
			if _, err := nestedLaunch(ctx, child, "sh", "-c", "echo nested-out"); err == nil {
				launched++
				h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: child})
				readLogsEveryWay(t, child)
			}
			h.client.RemoveNestedContainer(ctx, &agentv1.RemoveNestedContainerRequest{ContainerId: child, Force: true})
		}
		t.Logf("%d nested containers launched during the race", launched)
		h.client.WaitNestedContainer(ctx, &agentv1.WaitNestedContainerRequest{ContainerId: parent + ".flip"})
		can.check(t)
		if _, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: parent, Force: true}); err != nil {
			t.Errorf("removing %s: %v", parent, err)
		}
		can.check(t)
		agentAnswers(t)
		by.progresses(t, before)
	})
}

// A setuid binary and a device node made in a sandbox are inert: the mount
// is nosuid,nodev inside, and no unprivileged host user can reach them
// through the host path.
func TestHostileSetuidAndDeviceNodeAreInert(t *testing.T) {
	c := launchHostile(t, "h-suid", nil, `cp /bin/busybox "$S/id" && chmod 4755 "$S/id" && mknod "$S/null" c 1 3 && chmod 666 "$S/null" || echo PLANT-FAILED
grep " /mnt/sandbox " /proc/self/mountinfo
if echo x > "$S/null"; then echo dev-usable; else echo dev-inert; fi
sleep 300`)
	waitForOutput(t, "h-suid", "dev-")
	got, err := readLogs("h-suid", &agentv1.ReadLogsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	out := got[agentv1.Stream_STREAM_STDOUT]
	if strings.Contains(out, "PLANT-FAILED") {
		t.Fatalf("the container could not make its setuid binary or device node: %s %s", out, got[agentv1.Stream_STREAM_STDERR])
	}
	var mountOpts string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 5 && f[4] == "/mnt/sandbox" {
			mountOpts = f[5]
		}
	}
	for _, o := range []string{"nosuid", "nodev", "rw"} {
		if !strings.Contains(","+mountOpts+",", ","+o+",") {
			t.Errorf("the sandbox mount's options are %q: %s missing (mountinfo: %q)", mountOpts, o, out)
		}
	}
	if !strings.Contains(out, "dev-inert") {
		t.Errorf("the device node in the sandbox is usable in the container: %q", out)
	}
	// From the host, as an unprivileged user.
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	cmd := exec.Command(filepath.Join(c.Sandbox, "id"), "-u")
	cmd.SysProcAttr = nobody
	if b, err := cmd.CombinedOutput(); err == nil || !errors.Is(err, fs.ErrPermission) {
		t.Errorf("an unprivileged host user ran the container's setuid binary %s: %v %q", cmd.Path, err, b)
	}
	cmd = exec.Command("/bin/sh", "-c", `echo x > "$0" && echo opened`, filepath.Join(c.Sandbox, "null"))
	cmd.SysProcAttr = nobody
	if b, _ := cmd.CombinedOutput(); strings.Contains(string(b), "opened") {
		t.Errorf("an unprivileged host user opened the container's device node: %q", b)
	}
	checkPrivate(t, h.workDir(), filepath.Join(h.workDir(), "sandboxes"), c.Sandbox)
}

// checkPrivate fails unless each dir is a directory of mode 0700.
func checkPrivate(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		fi, err := os.Lstat(d)
		if err != nil {
			t.Error(err)
			continue
		}
		if !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s is %v, want a directory of mode 0700", d, fi.Mode())
		}
	}
}

// A container running as a non-root user writes its sandbox (it is the
// sandbox's owner; nobody else on the host can reach it).
func TestSandboxOfANonRootContainer(t *testing.T) {
	r := h.cli("run", "--rm", "-u", "1234:5678", testImage, "sh", "-c", `echo mine > "$GEARBOX_SANDBOX/f" && cat "$GEARBOX_SANDBOX/f" && id -u`)
	if r.code != 0 || r.stdout != "mine\n1234\n" {
		t.Fatalf("a non-root container writing its sandbox: %s", r)
	}
	user := "1234:5678"
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{ContainerId: "nonroot", Image: testImage, User: &user,
		Cmd: &agentv1.StringList{Values: []string{"sh", "-c", `echo x > "$GEARBOX_SANDBOX/f"; echo written; sleep 300`}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: "nonroot", Force: true})
	})
	waitForOutput(t, "nonroot", "written")
	fi, err := os.Lstat(resp.Container.Sandbox)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1234 || st.Gid != 5678 || fi.Mode().Perm() != 0o700 {
		t.Errorf("sandbox of a container running as 1234:5678 is %d:%d %v, want 1234:5678 0700", st.Uid, st.Gid, fi.Mode().Perm())
	}
	if r := h.cli("logs", "nonroot"); r.stdout != "written\n" {
		t.Errorf("logs of a non-root container: %s", r)
	}
}

// An older agent left the work dir and the sandboxes traversable by all; a
// new one tightens them at start.
func TestOlderAgentsSandboxDirsAreTightened(t *testing.T) {
	sb := filepath.Join(h.workDir(), "sandboxes")
	if err := h.stopAgent(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	os.Chmod(h.workDir(), 0o711)
	os.Chmod(sb, 0o755)
	if err := h.startAgent(); err != nil {
		t.Fatal(err)
	}
	checkPrivate(t, h.workDir(), sb)
}

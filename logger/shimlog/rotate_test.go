package shimlog

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gearboxd/gearbox/internal/sandboxfs"
)

// keptLines reads the chain oldest first and returns its lines.
func keptFiles(t *testing.T, path string, files int) [][]byte {
	t.Helper()
	var out [][]byte
	for k := files - 1; k >= 1; k-- {
		if b, err := os.ReadFile(fmt.Sprintf("%s.%d", path, k)); err == nil {
			out = append(out, b)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return append(out, b)
}

// testRotator opens a rotator for "stdout" in a fresh sandbox, with a
// host-only state directory beside it.
func testRotator(t testing.TB, max int64, files int) (w *rotator, dir string) {
	t.Helper()
	dir, state := t.TempDir(), t.TempDir()
	d, err := sandboxfs.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	w, err = newRotator(d, "stdout", state, max, files, &statusFile{})
	if err != nil {
		t.Fatal(err)
	}
	return w, dir
}

func benchRotator(b *testing.B, max int64, files int) (*rotator, string) {
	return testRotator(b, max, files)
}

// writeChunked feeds data to w in random pieces, as a pipe would.
func writeChunked(t *testing.T, w *rotator, data []byte, rng *rand.Rand) {
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(300))
		w.writeRetrying(data[:n])
		data = data[n:]
	}
}

func TestRotationKeepsContiguousWholeLines(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 1))
		const max, files = 256, 3
		w, dir := testRotator(t, max, files)
		path := filepath.Join(dir, "stdout")
		var input bytes.Buffer
		n := 500 + rng.IntN(500)
		for i := range n {
			pad := strings.Repeat("x", rng.IntN(60))
			fmt.Fprintf(&input, "%d %s\n", i, pad)
		}
		writeChunked(t, w, input.Bytes(), rng)
		w.close()

		kept := keptFiles(t, path, files)
		if len(kept) != files {
			t.Fatalf("seed %d: %d files kept, want %d", seed, len(kept), files)
		}
		var all []byte
		for i, f := range kept {
			// Each file within the limit plus at most one line (≤ 71 bytes).
			if len(f) > max+71 {
				t.Errorf("seed %d: file %d has %d bytes, limit %d", seed, i, len(f), max)
			}
			if len(f) > 0 && f[len(f)-1] != '\n' {
				t.Errorf("seed %d: file %d ends mid-line", seed, i)
			}
			all = append(all, f...)
		}
		if !bytes.HasSuffix(input.Bytes(), all) {
			t.Fatalf("seed %d: kept files are not a contiguous tail of the input", seed)
		}
		if all[0] == 'x' || bytes.HasPrefix(all, []byte(" ")) {
			t.Fatalf("seed %d: kept tail starts mid-line", seed)
		}
	}
}

func TestLongLinesAreSplitAndMarked(t *testing.T) {
	w, dir := testRotator(t, 100, 10)
	path := filepath.Join(dir, "stdout")
	long := strings.Repeat("a", 250) + "\n"
	w.writeRetrying([]byte("short\n" + long + "after\n"))
	w.close()
	var all []byte
	for _, f := range keptFiles(t, path, 10) {
		all = append(all, f...)
	}
	want := "short\n" + strings.Repeat("a", 100) + SplitMarker + strings.Repeat("a", 100) + SplitMarker + strings.Repeat("a", 50) + "\n" + "after\n"
	if string(all) != want {
		t.Fatalf("got %q\nwant %q", all, want)
	}
}

// A partial line at the end of a pipe read is written at once (so that a
// follower sees it) and finished by the next read, in the same file.
func TestPartialLinesStayTogether(t *testing.T) {
	w, dir := testRotator(t, 20, 5)
	path := filepath.Join(dir, "stdout")
	w.writeRetrying([]byte("0123456789012345\nhel"))
	if b, _ := os.ReadFile(path); !strings.HasSuffix(string(b), "\nhel") {
		t.Fatalf("partial line not written at once: %q", b)
	}
	// The line is finished where it started, past the limit by less than
	// one line; the next line goes to a new file.
	w.writeRetrying([]byte("lo\nnext\n"))
	w.close()
	if b, _ := os.ReadFile(path + ".1"); string(b) != "0123456789012345\nhello\n" {
		t.Fatalf("rotated file %q", b)
	}
	if b, _ := os.ReadFile(path); string(b) != "next\n" {
		t.Fatalf("live file %q", b)
	}
}

func TestMaxFilesOneKeepsOnlyTheLiveFile(t *testing.T) {
	w, dir := testRotator(t, 10, 1)
	path := filepath.Join(dir, "stdout")
	w.writeRetrying([]byte("aaaa\nbbbb\ncccc\n"))
	w.close()
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "stdout.") {
			t.Errorf("rotated file %s kept with max-files 1", e.Name())
		}
	}
	if b, _ := os.ReadFile(path); string(b) != "cccc\n" {
		t.Errorf("live file %q", b)
	}
}

func TestDropModeCountsWhatItDrops(t *testing.T) {
	a := testArgs(t)
	a.Mode = ModeDrop
	// 8 MiB arrive at once; the writer cannot keep 8 MiB queued, so some
	// may be dropped: whatever is missing must be accounted for by markers.
	total := 8 << 20
	line := strings.Repeat("z", 1023) + "\n"
	in := strings.NewReader(strings.Repeat(line, total/len(line)))
	if st := Run(a, in, strings.NewReader(""), nil); st != 0 {
		t.Fatalf("status %d", st)
	}
	out, _ := os.ReadFile(filepath.Join(a.Root, a.Sandbox, "stdout"))
	var dropped int
	kept := 0
	for _, l := range strings.SplitAfter(string(out), "\n") {
		if l == "" {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(strings.TrimLeft(l, "z"), "[gearbox-logger: dropped %d bytes]", &n); err == nil {
			dropped += n
			kept += len(l) - len(strings.TrimLeft(l, "z"))
			continue
		}
		kept += len(l)
	}
	if kept+dropped != total {
		t.Fatalf("kept %d + dropped %d != written %d", kept, dropped, total)
	}
}

func TestStatusFileReportsFailures(t *testing.T) {
	dir := t.TempDir()
	st := &statusFile{path: filepath.Join(dir, "status")}
	st.set("writing stdout: no space left on device")
	if b, _ := os.ReadFile(st.path); !strings.Contains(string(b), "no space") {
		t.Fatalf("status %q", b)
	}
	st.set("")
	if b, _ := os.ReadFile(st.path); len(b) != 0 {
		t.Fatalf("status not cleared: %q", b)
	}
}

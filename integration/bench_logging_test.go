//go:build bench

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Capture throughput through gearbox-logger (logrotate, 10 MiB x 5) against
// the same container writing straight into a file in its sandbox, same
// run; and the logger's peak RSS and CPU per GB captured.
func TestBenchLoggerThroughput(t *testing.T) {
	const total = 512 << 20
	const rounds = 3
	for _, lineLen := range []int{100, 4096} {
		var viaLogger, direct []float64
		var rss, cpuPerGB []float64
		for round := range rounds {
			mbps, _, _ := loggedWrite(t, fmt.Sprintf("bench-direct-%d-%d", lineLen, round), lineLen, total, true)
			direct = append(direct, mbps)
			mbps, hwm, cpu := loggedWrite(t, fmt.Sprintf("bench-logger-%d-%d", lineLen, round), lineLen, total, false)
			viaLogger = append(viaLogger, mbps)
			rss = append(rss, hwm)
			cpuPerGB = append(cpuPerGB, cpu)
		}
		l, d := median(viaLogger), median(direct)
		report(t, "capture of %d MiB in %d-byte lines (median of %d)\n  via gearbox-logger (rotating 10MiB x 5): %.0f MB/s\n  straight to a sandbox file:             %.0f MB/s\n  ratio: %.2f (target >= 0.5 for 4 KiB lines)\n  gearbox-logger peak RSS %.1f MiB (target <= 6), CPU %.2f s per GB captured",
			total>>20, lineLen, rounds, l, d, l/d, median(rss), median(cpuPerGB))
	}
}

var realTime = regexp.MustCompile(`real\s+(\d+)m\s*([\d.]+)s`)

// loggedWrite runs a container that writes total bytes of lineLen-byte
// lines and returns MB/s as timed inside the container; for the logger
// path also the logger's peak RSS (MiB) and CPU seconds per GB.
func loggedWrite(t *testing.T, id string, lineLen, total int, toFile bool) (float64, float64, float64) {
	t.Helper()
	target := ""
	if toFile {
		target = " > /mnt/sandbox/direct.out"
	}
	line := strings.Repeat("x", lineLen-1)
	script := fmt.Sprintf(`time sh -c 'yes %s | head -c %d%s'; sleep 1.5`, line, total, target)
	// The harness's disk-quota plugin allows 64 MiB per sandbox by default.
	resp, err := h.client.LaunchContainer(ctxT(t), &agentv1.LaunchContainerRequest{
		ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: []string{"sh", "-c", script}},
		Labels: map[string]string{"disk-quota": "4g"},
	})
	if err != nil {
		t.Fatal(err)
	}
	c := resp.Container
	var hwm, cpu float64
	if !toFile {
		pid := loggerPid(t, id)
		tick := float64(100) // USER_HZ
		var last [2]float64
		for {
			st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
			if err != nil {
				break
			}
			f := strings.Fields(string(st)[strings.LastIndexByte(string(st), ')')+2:])
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			last = [2]float64{u / tick, s / tick}
			if status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
				if m := regexp.MustCompile(`VmHWM:\s+(\d+) kB`).FindSubmatch(status); m != nil {
					kb, _ := strconv.ParseFloat(string(m[1]), 64)
					hwm = kb / 1024
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		cpu = (last[0] + last[1]) / (float64(total) / 1e9)
	}
	waitExit(t, id, 5*time.Minute)
	errOut, _ := os.ReadFile(filepath.Join(c.Sandbox, "stderr"))
	m := realTime.FindSubmatch(errOut)
	if m == nil {
		t.Fatalf("%s: no timing in %q", id, errOut)
	}
	mins, _ := strconv.ParseFloat(string(m[1]), 64)
	secs, _ := strconv.ParseFloat(string(m[2]), 64)
	h.client.RemoveContainer(ctxT(t), &agentv1.RemoveContainerRequest{ContainerId: id, Force: true})
	return float64(total) / 1e6 / (mins*60 + secs), hwm, cpu
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}

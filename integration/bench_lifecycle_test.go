//go:build bench

package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
)

// Recovery of 100 running containers, agent start to READY=1 (target
// <= 2 s); the agent's RSS idle and with 100 containers, and per container
// (target <= 200 KiB).
func TestBenchRecoveryAndRSS(t *testing.T) {
	const n = 100
	restartAgent(t, syscall.SIGTERM) // a fresh process for the idle figure
	time.Sleep(time.Second)
	idle := agentRSS(t)

	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			id := fmt.Sprintf("rec-%d", i)
			if _, err := h.client.LaunchContainer(context.Background(), &agentv1.LaunchContainerRequest{
				ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: []string{"sleep", "3600"}},
			}); err != nil {
				t.Errorf("launch %s: %v", id, err)
			}
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for i := range n {
			h.client.RemoveContainer(context.Background(), &agentv1.RemoveContainerRequest{ContainerId: fmt.Sprintf("rec-%d", i), Force: true})
		}
	})

	var times []float64
	for range 3 {
		d := timeToReady(t)
		times = append(times, d.Seconds())
		st, err := h.client.GetState(ctxT(t), &agentv1.GetStateRequest{})
		if err != nil || st.ContainersRunning < n {
			t.Fatalf("after recovery: %v running, %v", st.GetContainersRunning(), err)
		}
	}
	time.Sleep(time.Second)
	with := agentRSS(t)
	report(t, "recovery of %d running containers, start to READY=1 (SIGKILL, median of 3): %.0f ms (target <= 2000)\n  agent RSS idle %.1f MiB, with %d containers %.1f MiB: %.0f KiB per container (target <= 200)",
		n, median(times)*1000, idle/1024, n, with/1024, (with-idle)/n)
}

// timeToReady SIGKILLs the agent, starts it and times start to READY=1.
func timeToReady(t *testing.T) time.Duration {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ready := make(chan time.Time, 1)
	go func() {
		buf := make([]byte, 1024)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if strings.Contains(string(buf[:n]), "READY=1") {
				ready <- time.Now()
				return
			}
		}
	}()
	if err := h.stopAgent(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := h.startAgentWith(nil, []string{"NOTIFY_SOCKET=" + sock}); err != nil {
		t.Fatal(err)
	}
	select {
	case at := <-ready:
		return at.Sub(start)
	case <-time.After(30 * time.Second):
		t.Fatal("no READY=1")
	}
	return 0
}

// agentRSS is the agent's resident set in KiB.
func agentRSS(t *testing.T) float64 {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.agentCmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(status)
	kb, _ := strconv.ParseFloat(string(m[1]), 64)
	return kb
}

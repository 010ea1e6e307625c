//go:build bench

package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	agentv1 "github.com/gearboxd/gearbox/proto/gearbox/agent/v1"
	typesv1 "github.com/gearboxd/gearbox/proto/gearbox/types/v1"
)

// launchOn launches /bin/true on network (with a picked host port off the
// host network), waits for it and removes it: the time to running (the
// LaunchContainer call: CNI ADD included), and the whole cycle (CNI DEL
// at exit included).
func launchOn(id, network string) (time.Duration, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req := &agentv1.LaunchContainerRequest{ContainerId: id, Image: testImage, Cmd: &agentv1.StringList{Values: []string{"/bin/true"}}, Network: network}
	if network != "host" {
		req.PortMappings = []*typesv1.PortMapping{{ContainerPort: 80}}
	}
	start := time.Now()
	if _, err := h.client.LaunchContainer(ctx, req); err != nil {
		return 0, 0, err
	}
	launched := time.Since(start)
	if _, err := h.client.WaitContainer(ctx, &agentv1.WaitContainerRequest{ContainerId: id}); err != nil {
		return 0, 0, err
	}
	if _, err := h.client.RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: id}); err != nil {
		return 0, 0, err
	}
	return launched, time.Since(start), nil
}

// Launch (to exit and removal) of /bin/true on the bridge network "gearbox"
// with a port mapping vs on the host network, batches interleaved in one
// run; then 50 launches at concurrency 8 on the bridge: no failure, no IP
// left held.
func TestBenchNetworkLaunch(t *testing.T) {
	const rounds, batch = 4, 15
	var bridge, host, bridgeL, hostL []time.Duration
	for r := range rounds {
		for _, network := range []string{"host", "gearbox"} {
			for i := range batch + 2 {
				l, d, err := launchOn(fmt.Sprintf("bnet-%d-%s-%d", r, network, i), network)
				if err != nil {
					t.Fatal(err)
				}
				if i < 2 {
					continue // warm-up
				}
				if network == "host" {
					host, hostL = append(host, d), append(hostL, l)
				} else {
					bridge, bridgeL = append(bridge, d), append(bridgeL, l)
				}
			}
		}
	}
	ips0 := len(ipamIPs(t))
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failures []error
	sem := make(chan struct{}, 8)
	start := time.Now()
	for i := range 50 {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if _, _, err := launchOn(fmt.Sprintf("bnet-c-%d", i), "gearbox"); err != nil {
				mu.Lock()
				failures = append(failures, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	leaked := len(ipamIPs(t)) - ips0
	report(t, "launch /bin/true, %d each, batches interleaved (bridge: network gearbox, one port mapping)\n"+
		"  to running (CNI ADD):         bridge p50 %v p99 %v, host p50 %v p99 %v: added p50 %v (target <= 60ms), ratio p50 %.3f\n"+
		"  to exit and removal (+DEL):   bridge p50 %v p99 %v, host p50 %v p99 %v: added p50 %v, ratio p50 %.3f\n"+
		"  50 launches at concurrency 8 on the bridge: %v wall, %d failures, %d IPs leaked",
		len(bridge), pct(bridgeL, 50), pct(bridgeL, 99), pct(hostL, 50), pct(hostL, 99), pct(bridgeL, 50)-pct(hostL, 50), ratio(pct(bridgeL, 50), pct(hostL, 50)),
		pct(bridge, 50), pct(bridge, 99), pct(host, 50), pct(host, 99), pct(bridge, 50)-pct(host, 50), ratio(pct(bridge, 50), pct(host, 50)),
		wall.Round(time.Millisecond), len(failures), leaked)
	if len(failures) > 0 || leaked != 0 {
		t.Errorf("concurrent launches: failures %v, %d IPs leaked", failures, leaked)
	}
}

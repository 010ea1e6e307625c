//go:build bench

package integration

// raceBinaries: benchmarks measure the binaries as make build makes them.
// The race detector slows a process several times over, and the baselines
// they are compared with (containerd's client in this process, ctr) are
// not built with it.
const raceBinaries = false

//go:build !bench

package integration

// raceBinaries: the tests run the agent, the master and the loggers built
// with the race detector, where their concurrency is exercised for real.
const raceBinaries = true

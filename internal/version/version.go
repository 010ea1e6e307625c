// Package version holds the build's version, set by the linker
// (-X github.com/gearboxd/gearbox/internal/version.Version=...).
package version

// Set at link time by the Makefile.
var (
	Version   = "dev"
	GitCommit = ""
)

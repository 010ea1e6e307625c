// Package integration holds gearbox's end-to-end tests: a private
// containerd, images built locally from busybox-static, a real registry with
// basic auth on 127.0.0.1, the gearbox agent binary and the real CLI. They
// need root and fail, not skip, when something is missing.
package integration

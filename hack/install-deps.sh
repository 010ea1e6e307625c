#!/usr/bin/env bash
# Installs from Debian's packages what gearbox needs and is missing.
#   dev:  to run gearbox (containerd, runc, busybox-static for the demo image)
#   test: also what the tests use (a registry, protoc)
set -euo pipefail
what=${1:-dev}
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)
if [ "$what" = test ]; then
  have docker-registry || need+=(docker-registry)
  have protoc || need+=(protobuf-compiler)
  have git || need+=(git)
  have gcc || need+=(gcc libc6-dev)  # go test -race needs cgo
  have systemd-analyze || need+=(systemd)  # checks the unit file
  have tmux || need+=(tmux)  # a real terminal for the session tests
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "missing: ${need[*]} — run as root (sudo make $what) or apt-get install them" >&2
  exit 1
fi
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Debian's packages would start their services where systemd runs; gearbox
# starts its own containerd and registry when it needs them.
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null

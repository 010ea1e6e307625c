#!/usr/bin/env bash
# make ci-fresh: run .ci/run the way CI does, on a machine that has nothing
# but Go — the honest check that .ci/run installs everything gearbox needs.
# A machine that ran gearbox before holds packages installed by hand, and a
# green CI there can hide a missing install step (libprotobuf-dev did).
#
# It builds a minimal Debian 12 root with mmdebstrap (variant minbase: apt and
# the essential packages, nothing else), copies this clone's committed HEAD
# into it (git clone, so uncommitted work is not tested, as in CI), binds Go
# (read-only), /proc, /sys and /dev, and runs `bash .ci/run` there as root
# with CI=true. The Go module cache starts empty too; only the Go build cache
# is shared (it holds compiled objects keyed by their inputs, never packages).
#
#   hack/ci-fresh.sh            build the root, run .ci/run, remove the root
#   KEEP=1 hack/ci-fresh.sh     keep the root afterwards (its path is printed)
#   RUN='hack/install-deps.sh test && go test -count=1 -run TestX ./integration/' \
#     hack/ci-fresh.sh            run that instead of .ci/run (to chase one failure)
#
# Needs root and mmdebstrap (installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
[ "$(id -u)" = 0 ] || { echo "ci-fresh runs as root (it chroots): sudo make ci-fresh" >&2; exit 1; }
goroot=$(go env GOROOT)
if ! command -v mmdebstrap >/dev/null; then
  echo "installing mmdebstrap"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

work=$(mktemp -d /var/tmp/gearbox-ci-fresh.XXXXXX)
root=$work/root
mounted=()
bind() { # bind SRC DST [ro]
  mkdir -p "$root$2"
  mount --rbind "$1" "$root$2"
  mount --make-rslave "$root$2"
  [ "${3:-}" = ro ] && mount -o remount,bind,ro "$root$2"
  mounted+=("$root$2")
}
cleanup() {
  local rc=$?
  # Processes left in the root (a test's containerd, shims) go first.
  # They are in a mount namespace of their own (see below), so they are
  # found by the mark in their environment, which children inherit.
  for p in /proc/[0-9]*; do
    if [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] ||
      { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qx "GEARBOX_CI_FRESH=$work"; then
      kill -9 "${p#/proc/}" 2>/dev/null || true
    fi
  done
  sleep 0.5
  for ((i=${#mounted[@]}-1; i>=0; i--)); do
    umount -R "${mounted[$i]}" 2>/dev/null || umount -R -l "${mounted[$i]}" 2>/dev/null || true
  done
  # Never remove through a mount that is still there.
  if findmnt -rn -o TARGET | grep -q "^$root"; then
    echo "ci-fresh: mounts remain under $root; not removing it" >&2
  elif [ -z "${KEEP:-}" ]; then
    rm -rf "$work"
  else
    echo "ci-fresh: root kept at $root"
  fi
  exit $rc
}
trap cleanup EXIT

echo "== building a minimal Debian 12 root in $root"
mmdebstrap --quiet --variant=minbase --mode=root bookworm "$root" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"
# The machine's apt settings (a mirror's date checks), but none of its packages.
cp /etc/apt/apt.conf.d/99artifact-registry "$root/etc/apt/apt.conf.d/" 2>/dev/null || true
cp /etc/resolv.conf "$root/etc/resolv.conf"
# minbase has no /etc/hosts; every installed Debian does (containers on the
# host network get the host's).
[ -e "$root/etc/hosts" ] || cp /etc/hosts "$root/etc/hosts"
# And the machine's local CAs (a TLS-inspecting proxy's, say): the
# ca-certificates package that .ci/run installs adds them to the bundle.
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  mkdir -p "$root/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi

# runc makes / a slave mount in each container's mount namespace: inside
# the chroot, / must be a mount point of its own.
mount --bind "$root" "$root"; mounted+=("$root")

echo "== cloning HEAD ($(git rev-parse --short HEAD)) into the root"
git clone -q --no-local "$repo" "$root/src/gearbox"

bind /proc /proc
bind /sys /sys
bind /dev /dev
bind "$goroot" /usr/local/go ro
mkdir -p "$root/run" "$root/tmp" "$root/root/.cache"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"; mounted+=("$root/run")
gocache=$(go env GOCACHE)
bind "$gocache" /root/.cache/go-build

run=${RUN:-exec bash .ci/run}
echo "== running ${RUN:-.ci/run} inside (CI=true)"
start=$(date +%s)
# Not a plain chroot: in a new mount namespace, pivot_root makes the root
# the namespace's root. Joining a mount namespace (setns, as runc exec does)
# puts a process at that namespace's root, and a container made from inside
# a chroot keeps the machine's real / there: `exec` into a container would
# run the machine's /bin/sh instead of the image's.
unshare --mount --propagation private -- /bin/sh -c '
  cd "$1" && mkdir -p .ci-oldroot && pivot_root . .ci-oldroot || exit 125
  shift
  exec /usr/sbin/chroot . /bin/sh -c "umount -l /.ci-oldroot && rmdir /.ci-oldroot && exec \"\$@\"" sh "$@"
' sh "$root" /usr/bin/env -i \
  HOME=/root PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  CI=true TERM=dumb GEARBOX_CI_FRESH="$work" GOPROXY="$(go env GOPROXY)" GOFLAGS="$(go env GOFLAGS)" \
  bash -c "cd /src/gearbox && $run" </dev/null
echo "== ci-fresh passed in $(( $(date +%s) - start )) s"

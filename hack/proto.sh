#!/usr/bin/env bash
# Regenerates the Go code next to every .proto file, with the plugins pinned
# in go.mod (go tool) and protoc from Debian's protobuf-compiler.
#   hack/proto.sh          regenerate in place
#   hack/proto.sh --check  fail if the committed code differs from what the
#                          .proto files generate
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/bin/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$tmp/bin/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
out=proto
if [ "${1:-}" = --check ]; then
  out="$tmp/out"
  mkdir -p "$out"
fi
mapfile -t files < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
PATH="$tmp/bin:$PATH" protoc -I proto \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  "${files[@]}"
if [ "${1:-}" = --check ]; then
  stale=0
  while IFS= read -r f; do
    if ! cmp -s "$out/$f" "proto/$f"; then
      echo "stale: proto/$f" >&2
      stale=1
    fi
  done < <(cd "$out" && find . -name '*.go' | sed 's|^\./||')
  if [ $stale = 1 ]; then
    echo "the generated code in proto/ does not match the .proto files: run make proto" >&2
    exit 1
  fi
fi

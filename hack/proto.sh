#!/usr/bin/env bash
# Regenerates the Go code next to every .proto file, with the plugins pinned
# in go.mod (go tool) and protoc from Debian's protobuf-compiler.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v protoc >/dev/null || { echo "protoc is missing: apt-get install protobuf-compiler" >&2; exit 1; }
bindir=$(mktemp -d); trap 'rm -rf "$bindir"' EXIT
go build -o "$bindir/protoc-gen-go" google.golang.org/protobuf/cmd/protoc-gen-go
go build -o "$bindir/protoc-gen-go-grpc" google.golang.org/grpc/cmd/protoc-gen-go-grpc
mapfile -t files < <(cd proto && find . -name '*.proto' | sed 's|^\./||' | sort)
PATH="$bindir:$PATH" protoc -I proto \
  --go_out=proto --go_opt=paths=source_relative \
  --go-grpc_out=proto --go-grpc_opt=paths=source_relative \
  "${files[@]}"

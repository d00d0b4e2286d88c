#!/usr/bin/env bash
# Builds Jaeger v2 (the all-in-one `jaeger` binary) from the Go module proxy into a cache outside
# the repository, when it is not there yet. Prints the binary's path.
#
# Only the query API and the OTLP receiver matter to the mesh's tests and `meshctl up`; the
# release's web UI assets are not in the Go module, so the UI shows a placeholder page.
#
# Environment:
#   JAEGER_VERSION  the Go module version of github.com/jaegertracing/jaeger (v1.76.0 is the
#                   module version of Jaeger v2.13.0)
#   MESH_CACHE_DIR  where builds are kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/mesh)
set -euo pipefail

version="${JAEGER_VERSION:-v1.76.0}"
cache="${MESH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mesh}"
dir="$cache/jaeger-$version"
bin="$dir/jaeger"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "build-jaeger: needs Go (1.24 or newer) on PATH to build Jaeger $version" >&2
  exit 1
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

echo "build-jaeger: building github.com/jaegertracing/jaeger/cmd/jaeger@$version into $dir (takes minutes)" >&2
# Jaeger's go.mod has a replace directive, so `go install pkg@version` refuses it: build inside a
# writable copy of the downloaded module instead, as its own main module.
src=$(GOFLAGS=-mod=mod go mod download -json "github.com/jaegertracing/jaeger@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -d "$src" ]; then
  echo "build-jaeger: could not download github.com/jaegertracing/jaeger@$version from the Go module proxy" >&2
  exit 1
fi
cp -r "$src" "$tmp/src"
chmod -R u+w "$tmp/src"
(cd "$tmp/src" && CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod" go build -o "$tmp/jaeger" ./cmd/jaeger) >&2
mv "$tmp/jaeger" "$bin"
echo "$bin"

#!/usr/bin/env bash
# Fetches the pinned Gateway API CRDs (standard channel) from the Go module proxy into a cache
# outside the repository, when they are not there yet. Prints the directory that holds them.
#
# The control plane's Kubernetes mode reads Gateway and HTTPRoute objects
# (gateway.networking.k8s.io/v1); its tests install these CRDs into the test cluster, as a user
# installs them into a real one (docs/kubernetes.md, "Ingress with the Gateway API").
#
# Environment:
#   GATEWAY_API_VERSION  the sigs.k8s.io/gateway-api module version (the one the mesh supports)
#   MESH_CACHE_DIR       where downloads are kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/mesh)
set -euo pipefail

version="${GATEWAY_API_VERSION:-v1.6.3}"
cache="${MESH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mesh}"
dir="$cache/gateway-api-$version"
kinds="gatewayclasses gateways httproutes"

complete() {
  for kind in $kinds; do
    [ -s "$dir/gateway.networking.k8s.io_$kind.yaml" ] || return 1
  done
}

if complete; then
  echo "$dir"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "gateway-api-crds: needs Go on PATH to download sigs.k8s.io/gateway-api@$version" >&2
  exit 1
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.download.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# `go mod download` outside a module needs one to hold the request; the module cache keeps the
# source, read-only, under the Dir it reports.
src=$(cd "$tmp" && GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "sigs.k8s.io/gateway-api@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$src" ] || [ ! -d "$src/config/crd/standard" ]; then
  echo "gateway-api-crds: could not download sigs.k8s.io/gateway-api@$version from the Go module proxy" >&2
  exit 1
fi
for kind in $kinds; do
  cp "$src/config/crd/standard/gateway.networking.k8s.io_$kind.yaml" "$tmp/"
  chmod 0644 "$tmp/gateway.networking.k8s.io_$kind.yaml"
  mv "$tmp/gateway.networking.k8s.io_$kind.yaml" "$dir/"
done

echo "$dir"

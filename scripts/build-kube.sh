#!/usr/bin/env bash
# Builds a pinned kube-apiserver and etcd from the Go module proxy into a cache outside the
# repository, when they are not there yet. Prints the directory that holds both binaries.
#
# The mesh's Kubernetes tests run these two as a real control plane with no nodes: the API,
# admission, RBAC and storage are real; pods are accepted but never scheduled or run.
#
# Measured on a 2-core machine shared with other builds, starting from an empty Go module and
# build cache: kube-apiserver 15 min 45 s (downloads included; peak 2.3 GB of memory, a 114 MB
# binary), then etcd 1 min 36 s (most of its dependencies were already downloaded and compiled
# for the API server; 24 MB). Relinking kube-apiserver from a warm Go build cache takes 8 s.
# Later runs find both binaries and return at once.
#
# Environment:
#   KUBE_VERSION    the k8s.io/kubernetes module version (v1.37.x matches k8s-openapi's `latest`)
#   ETCD_VERSION    the go.etcd.io/etcd/server/v3 module version (the 3.7 line this Kubernetes
#                   release is built against)
#   MESH_CACHE_DIR  where builds are kept (default ${XDG_CACHE_HOME:-$HOME/.cache}/mesh)
set -euo pipefail

version="${KUBE_VERSION:-v1.37.2}"
etcd_version="${ETCD_VERSION:-v3.7.3}"
cache="${MESH_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mesh}"
dir="$cache/kube-$version"
apiserver="$dir/kube-apiserver"
etcd="$dir/etcd"

# etcd's binary reports the version it was built from; a different pin means a rebuild.
etcd_current() { [ -x "$etcd" ] && "$etcd" --version 2>/dev/null | grep -qx "etcd Version: ${etcd_version#v}"; }

if [ -x "$apiserver" ] && etcd_current; then
  echo "$dir"
  exit 0
fi

if ! command -v go >/dev/null; then
  echo "build-kube: needs Go (1.26 or newer) on PATH to build kube-apiserver $version and etcd $etcd_version" >&2
  exit 1
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0 GOFLAGS=-mod=mod GOTOOLCHAIN=local

# Both modules carry `replace` directives pointing into their own source trees, so
# `go install pkg@version` refuses them. A throwaway main module that requires the pinned
# version builds the same packages: replace directives of dependencies are ignored, and the ones
# that matter are restated here with published versions.
if [ ! -x "$apiserver" ]; then
  echo "build-kube: building k8s.io/kubernetes/cmd/kube-apiserver@$version into $dir (takes many minutes)" >&2
  mkdir "$tmp/apiserver"
  mod=$(cd "$tmp/apiserver" && go mod download -json "k8s.io/kubernetes@$version" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  if [ -z "$mod" ] || [ ! -f "$mod" ]; then
    echo "build-kube: could not download k8s.io/kubernetes@$version from the Go module proxy" >&2
    exit 1
  fi
  # Each staging module (k8s.io/api, k8s.io/apimachinery, ...) is published as v0.<minor>.<patch>
  # of the same release: v1.37.2 goes with v0.37.2.
  staging="v0.${version#v1.}"
  {
    echo "module mesh.local/kube-apiserver-build"
    echo
    sed -n 's/^go \(.*\)$/go \1/p; s/^godebug \(.*\)$/godebug \1/p' "$mod"
    echo
    echo "require k8s.io/kubernetes $version"
    echo
    echo "replace ("
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*$#\t\1 => \1 '"$staging"'#p' "$mod"
    echo ")"
  } >"$tmp/apiserver/go.mod"
  # Kubernetes' own build stamps its version into these variables; unstamped, the server's
  # /version says v0.0.0-master.
  minor="${version#v1.}"
  minor="${minor%%.*}"
  stamp=""
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    stamp="$stamp -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  (cd "$tmp/apiserver" &&
    go build -trimpath -ldflags="-s -w$stamp" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver) >&2
  mv "$tmp/kube-apiserver" "$apiserver"
fi

if ! etcd_current; then
  echo "build-kube: building go.etcd.io/etcd/server/v3@$etcd_version into $dir (takes minutes)" >&2
  mkdir "$tmp/etcd"
  {
    echo "module mesh.local/etcd-build"
    echo
    echo "go 1.26.0"
    echo
    echo "require go.etcd.io/etcd/server/v3 $etcd_version"
    echo
    echo "replace ("
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      printf '\tgo.etcd.io/etcd/%s => go.etcd.io/etcd/%s %s\n' "$m" "$m" "$etcd_version"
    done
    echo ")"
  } >"$tmp/etcd/go.mod"
  (cd "$tmp/etcd" &&
    go build -trimpath -ldflags="-s -w" -o "$tmp/etcd-bin" go.etcd.io/etcd/server/v3) >&2
  mv "$tmp/etcd-bin" "$etcd"
fi

echo "$dir"

#!/usr/bin/env bash
# The whole benchmark suite in one command: builds release binaries, then runs the data path
# against Envoy (keep-alive, then the other workloads), opaque TCP against Envoy (needs
# redis-server and redis-tools), the control plane at scale, the streaming-memory check, and
# faults under load (chaos). The sidecar measured is the shipped build (`--profile dist`).
# Results go to benches/results/, each naming the machine, the load on it, the commit and the
# sidecar binary; body-memory prints its own.
#
#   bash benches/run.sh            the full plan (about an hour on 2 cores)
#   bash benches/run.sh --quick    every benchmark's smoke plan, under five minutes once built;
#                                  exits non-zero when any configuration failed or saw errors
set -euo pipefail
cd "$(dirname "$0")/.."
quick=()
if [ "${1:-}" = "--quick" ]; then
  quick=(--quick)
  shift
fi
if [ $# -gt 0 ]; then
  echo "usage: bash benches/run.sh [--quick]" >&2
  exit 2
fi
cargo build --release -p mesh-sidecar -p mesh-control-plane -p mesh-testkit -p mesh-benches
# The sidecar as shipped (the `dist` profile: fat LTO, one codegen unit) is the one measured;
# the harnesses stay `release` builds. A smoke run measures the quick `release` sidecar.
if [ ${#quick[@]} -eq 0 ]; then
  cargo build --profile dist -p mesh-sidecar --bin sidecar
  export MESH_BENCH_SIDECAR=target/dist/sidecar
fi
target/release/datapath "${quick[@]}"
target/release/workloads "${quick[@]}"
target/release/tcp-path "${quick[@]}"
target/release/control-plane-scale "${quick[@]}"
if [ ${#quick[@]} -eq 0 ]; then
  # 100 MiB through a pair: a memory check with no smoke plan (the tests cover streaming).
  target/release/body-memory
fi
target/release/chaos "${quick[@]}"

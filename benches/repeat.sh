#!/usr/bin/env bash
# Consecutive full runs of the same-run comparisons against Envoy (keep-alive `datapath` with
# direct, ours and envoy; every `workloads` workload), then one table of every target's ratio in
# each run and whether it held in all of them: a target is claimed only when it holds run after
# run, not in one lucky run.
#
#   bash benches/repeat.sh                      5 runs of both (about 1.5 hours on 2 cores)
#   bash benches/repeat.sh 5 --only datapath    5 runs of the keep-alive workload (~20 min)
#   bash benches/repeat.sh 2 --only workloads --rounds 6
#                                               2 runs of the workloads, 6 rounds each
#
# Runs go to benches/results/repeat[-ONLY]/run-N/ (each harness's own .md and .json), the table
# to benches/results/repeat[-ONLY].md. The sidecar measured is the shipped build
# (`--profile dist`), as in benches/run.sh. Needs a quiet machine: nothing else running.
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
  echo "usage: bash benches/repeat.sh [RUNS] [--only datapath|workloads] [--rounds N]" >&2
  exit 2
}
runs=5
only=
rounds=()
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
  runs=$1
  shift
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --only) [ $# -ge 2 ] || usage; only=$2; shift 2 ;;
    --rounds) [ $# -ge 2 ] || usage; rounds=(--rounds "$2"); shift 2 ;;
    *) usage ;;
  esac
done
case "$runs" in '' | *[!0-9]*) usage ;; esac
[ "$runs" -ge 1 ] || usage
case "$only" in '' | datapath | workloads) ;; *) usage ;; esac
cargo build --release -p mesh-sidecar -p mesh-testkit -p mesh-benches
cargo build --profile dist -p mesh-sidecar --bin sidecar
export MESH_BENCH_SIDECAR=target/dist/sidecar
out=benches/results/repeat${only:+-$only}
rm -rf "$out"
for run in $(seq "$runs"); do
  dir="$out/run-$run"
  if [ "$only" != workloads ]; then
    echo "=== run $run/$runs: datapath" >&2
    target/release/datapath --only direct,ours,envoy "${rounds[@]}" --out "$dir" >/dev/null
  fi
  if [ "$only" != datapath ]; then
    echo "=== run $run/$runs: workloads" >&2
    target/release/workloads "${rounds[@]}" --out "$dir" >/dev/null
  fi
done
python3 benches/repeat_summary.py "$out" >"$out.md"
cat "$out.md"

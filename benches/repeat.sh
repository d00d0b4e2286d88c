#!/usr/bin/env bash
# Consecutive full runs of the same-run comparisons against Envoy (keep-alive `datapath` with
# direct, ours and envoy; every `workloads` workload), then one table of every target's ratio in
# each run and whether it held in all of them: a target is claimed only when it holds run after
# run, not in one lucky run.
#
#   bash benches/repeat.sh            5 runs (about 50 minutes on 2 cores, quiet machine)
#   bash benches/repeat.sh 2          2 runs
#
# Runs go to benches/results/repeat/run-N/ (each harness's own .md and .json), the table to
# benches/results/repeat.md. The sidecar measured is the shipped build (`--profile dist`), as
# in benches/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
case "$runs" in
  '' | *[!0-9]*) echo "usage: bash benches/repeat.sh [RUNS]" >&2; exit 2 ;;
esac
[ "$runs" -ge 1 ] || { echo "RUNS must be at least 1" >&2; exit 2; }
cargo build --release -p mesh-sidecar -p mesh-testkit -p mesh-benches
cargo build --profile dist -p mesh-sidecar --bin sidecar
export MESH_BENCH_SIDECAR=target/dist/sidecar
out=benches/results/repeat
rm -rf "$out"
for run in $(seq "$runs"); do
  dir="$out/run-$run"
  echo "=== run $run/$runs: datapath" >&2
  target/release/datapath --only direct,ours,envoy --out "$dir" >/dev/null
  echo "=== run $run/$runs: workloads" >&2
  target/release/workloads --out "$dir" >/dev/null
done
python3 benches/repeat_summary.py "$out" >benches/results/repeat.md
cat benches/results/repeat.md

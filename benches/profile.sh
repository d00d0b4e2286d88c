#!/usr/bin/env bash
# Where a sidecar's CPU goes under one workload at its fixed rate: runs the workload through
# our sidecar pair alone (one round, long phases), samples both sidecars with `perf record`
# (cpu-clock, so it works in VMs without hardware counters) during the fixed-rate phase, and
# prints each sidecar's self time grouped by component (kernel, crypto, TLS, HTTP/2, HTTP/1,
# runtime, allocator, copies, the mesh's own code), then the top symbols.
#
#   bash benches/profile.sh keep-alive        (the datapath workload, 1,000 req/s)
#   bash benches/profile.sh new-connection    (any workload of target/release/workloads)
#
# Needs perf (Debian: linux-perf) and release binaries (cargo build --release -p mesh-sidecar
# -p mesh-benches). The sidecar profiled is the shipped build, target/dist/sidecar (cargo build
# --profile dist -p mesh-sidecar), when it exists, else the release one; MESH_BENCH_SIDECAR
# names another. Samples go to a temporary directory, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
workload=${1:?usage: bash benches/profile.sh WORKLOAD [SECONDS]}
phase=${2:-12}
command -v perf >/dev/null || { echo "perf is missing (Debian: linux-perf)" >&2; exit 1; }
if [ -z "${MESH_BENCH_SIDECAR:-}" ] && [ -x target/dist/sidecar ]; then
  export MESH_BENCH_SIDECAR=target/dist/sidecar
fi
echo "profiling ${MESH_BENCH_SIDECAR:-target/release/sidecar}" >&2
work=$(mktemp -d)
harness_pid=
cleanup() {
  # SIGINT: the harness stops its app and proxies on Ctrl-C.
  [ -n "$harness_pid" ] && kill -INT "$harness_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ "$workload" = keep-alive ]; then
  target/release/datapath --only ours --rounds 1 --phase-seconds "$phase" --out "$work" \
    >"$work/harness.out" 2>"$work/harness.err" &
else
  target/release/workloads --only "$workload" --configurations ours --rounds 1 \
    --phase-seconds "$phase" --out "$work" >"$work/harness.out" 2>"$work/harness.err" &
fi
harness_pid=$!

# The measured round starts with the closed loop; the fixed-rate phase follows it.
for _ in $(seq 600); do
  grep -q "round 1/1" "$work/harness.err" 2>/dev/null && break
  kill -0 "$harness_pid" 2>/dev/null || { cat "$work/harness.err" >&2; exit 1; }
  sleep 0.1
done
grep -q "round 1/1" "$work/harness.err" || { echo "the round did not start" >&2; exit 1; }
sleep "$(python3 -c "print($phase + 0.5)")"
client=$(pgrep -n -f "sidecar --config .*/sidecar-orders" || true)
server=$(pgrep -n -f "sidecar --config .*/sidecar-inventory" || true)
[ -n "$client" ] && [ -n "$server" ] || { echo "no sidecar processes found" >&2; exit 1; }
pids="$client,$server"
record=$(python3 -c "print(max(1.0, $phase - 2))")
perf record -q -e cpu-clock -F 1999 -p "$pids" -o "$work/perf.data" -- sleep "$record" 2>/dev/null
wait "$harness_pid" || true
harness_pid=

perf report -i "$work/perf.data" --no-children --sort comm,pid,dso,sym --stdio 2>/dev/null \
  | python3 benches/profile_summary.py "$workload" "$client=client-side sidecar" \
    "$server=server-side sidecar"

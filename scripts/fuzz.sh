#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each for SECONDS (default 15) from its committed
# seed corpus; fails on the first crash, panic, hang (an input taking over 10s) or memory blow-up.
# See docs/fuzzing.md.
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address and others) to rustc; the stable
# toolchain accepts them under RUSTC_BOOTSTRAP=1, and its sysroot has the AddressSanitizer
# runtime. New inputs the fuzzer finds go to fuzz/target/corpus/<target> (not committed);
# a crashing input goes to fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-15}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi

echo "fuzz: building every target"
cargo fuzz build

failed=()
for target in $(cargo fuzz list); do
  found="target/corpus/$target"
  mkdir -p "$found"
  log="target/fuzz-$target.log"
  # New inputs go to the first directory; the committed seeds are only read.
  if cargo fuzz run "$target" "$found" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "fuzz $target: ok, ${runs:-?} runs in ${seconds}s, ${cov:-cov: ?}"
  else
    echo "fuzz $target: FAILED; its log follows, the input is in fuzz/artifacts/$target/"
    tail -n 60 "$log"
    failed+=("$target")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a failure"

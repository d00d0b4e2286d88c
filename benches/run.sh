#!/usr/bin/env bash
# The whole benchmark suite in one command: builds release binaries, then runs the data path
# against Envoy, opaque TCP against Envoy (needs redis-server and redis-tools), the control
# plane at scale, the streaming-memory check, and faults under load (chaos). Results go to
# benches/results/ (and body-memory prints its own). Extra arguments go to datapath.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p mesh-sidecar -p mesh-control-plane -p mesh-testkit -p mesh-benches
target/release/datapath "$@"
target/release/tcp-path
target/release/control-plane-scale
target/release/body-memory
target/release/chaos

#!/usr/bin/env bash
# Runs the example pair on loopback: the orders and inventory apps (echo apps), each behind
# its own sidecar, with development certificates. Ctrl-C stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

cargo build --release --quiet -p mesh-sidecar -p meshctl -p demo-services
bin="$root/target/release"

"$bin/meshctl" dev-certs --out "$here/certs" --trust-domain mesh.local orders inventory

pids=()
stop() {
  trap - EXIT INT TERM
  echo; echo "stopping..."
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop EXIT INT TERM

logs="$root/target/example-logs"
mkdir -p "$logs"
"$bin/echo-app" --name orders --listen 127.0.0.1:8081 >"$logs/orders-app.log" 2>&1 & pids+=($!)
"$bin/echo-app" --name inventory --listen 127.0.0.1:8082 >"$logs/inventory-app.log" 2>&1 & pids+=($!)
"$bin/sidecar" --config "$here/orders.yaml" >"$logs/orders-sidecar.log" 2>&1 & pids+=($!)
"$bin/sidecar" --config "$here/inventory.yaml" >"$logs/inventory-sidecar.log" 2>&1 & pids+=($!)

for admin in 127.0.0.1:15000 127.0.0.1:16000; do
  for _ in $(seq 50); do
    curl -sf "http://$admin/ready" >/dev/null && break
    sleep 0.1
  done
  curl -sf "http://$admin/ready" >/dev/null || { echo "sidecar at $admin did not become ready; see $logs"; exit 1; }
done

cat <<MSG
The example pair is running (logs in $logs):
  orders     app 127.0.0.1:8081  sidecar outbound :15001  inbound :15006  admin :15000
  inventory  app 127.0.0.1:8082  sidecar outbound :16001  inbound :16006  admin :16000

Orders calling inventory through both sidecars:
  \$ curl -s -H 'Host: inventory' http://127.0.0.1:15001/api/stock/abc
MSG
curl -s -H 'Host: inventory' http://127.0.0.1:15001/api/stock/abc
cat <<MSG

More to try:
  curl -si -H 'Host: nowhere' http://127.0.0.1:15001/           # 503, x-mesh-error: no-route
  curl -s  http://127.0.0.1:15000/metrics                       # Prometheus metrics
  curl -s  http://127.0.0.1:15000/config                        # configuration in force
Press Ctrl-C to stop.
MSG
wait "${pids[@]}"

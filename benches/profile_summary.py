"""Groups `perf report --no-children --sort comm,pid,dso,sym --stdio` self time by component.

Read from standard input; the first argument names the workload, for the heading, the others
are PID=ROLE pairs naming the processes. Prints, per process, the share of its samples in each
component and its ten hottest symbols.
"""

import re
import sys
from collections import defaultdict

# First match wins: the order puts specific crates before the generic buckets.
COMPONENTS = [
    ("crypto (AES-GCM, ChaCha, SHA, ECDSA)", r"ring::|ring_core|aes_|gcm_|GFp|chacha|sha256|sha512|p256|ecp_nistz|x25519"),
    ("TLS (rustls)", r"rustls::|tokio_rustls"),
    ("HTTP/2 (h2)", r"\bh2::"),
    ("HTTP/1 and client/server glue (hyper, hyper-util)", r"hyper::|hyper_util::|httparse"),
    ("runtime (tokio)", r"tokio::|mio::"),
    ("allocator (mimalloc)", r"\bmi_|mimalloc|_mi_|malloc|free\b|realloc"),
    ("copies (memcpy, memmove, memset)", r"memcpy|memmove|memset|__memcpy|__memmove"),
    ("metrics (prometheus-client, windows)", r"prometheus_client|metrics::window|metrics::"),
    ("tracing and trace context", r"opentelemetry|tracing|propagation|traceparent"),
    ("headers and URIs (http)", r"\bhttp::|HeaderMap|header::"),
    ("mesh (the sidecar's own code)", r"mesh_sidecar::|mesh_api::"),
    ("tower, futures, bytes", r"tower::|futures_|bytes::"),
]

LINE = re.compile(
    r"^\s*(?P<pct>[\d.]+)%\s+(?P<comm>\S+)\s+(?P<pid>\d+):\S+\s+(?P<dso>\S+)\s+\[(?P<kind>[k.])\]\s+(?P<sym>.*)$"
)


def component(dso, kind, sym):
    if kind == "k" or dso.startswith("[kernel"):
        return "kernel (syscalls, TCP/loopback, wake-ups)"
    for name, pattern in COMPONENTS:
        if re.search(pattern, sym):
            return name
    if "libc" in dso:
        return "libc (other)"
    return "other"


def main():
    workload = sys.argv[1] if len(sys.argv) > 1 else "?"
    roles = dict(arg.split("=", 1) for arg in sys.argv[2:] if "=" in arg)
    per_pid = defaultdict(lambda: defaultdict(float))
    symbols = defaultdict(list)
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        pct = float(m["pct"])
        pid = m["pid"]
        sym = m["sym"].strip()
        per_pid[pid][component(m["dso"], m["kind"], sym)] += pct
        symbols[pid].append((pct, sym))
    if not per_pid:
        print("no samples", file=sys.stderr)
        sys.exit(1)
    print(f"# CPU profile: {workload}\n")
    for pid, parts in per_pid.items():
        total = sum(parts.values())
        role = roles.get(pid, "sidecar")
        print(f"## {role} (pid {pid}, {total:.1f}% of all samples)\n")
        print("| component | share of this sidecar's CPU |\n|---|---:|")
        for name, pct in sorted(parts.items(), key=lambda kv: -kv[1]):
            print(f"| {name} | {100 * pct / total:.1f}% |")
        print("\nHottest symbols (self time):\n")
        for pct, sym in sorted(symbols[pid], key=lambda ps: -ps[0])[:10]:
            print(f"- {100 * pct / total:.1f}% {sym[:110]}")
        print()


if __name__ == "__main__":
    main()

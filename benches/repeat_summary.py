#!/usr/bin/env python3
"""One table of every same-run target against Envoy over consecutive runs.

Reads benches/results/repeat/run-N/{datapath,workloads}.json (written by benches/repeat.sh) and
prints markdown: per target, the ratio ours / Envoy in each run, its limit, and whether it held
in every run. Usage: python3 benches/repeat_summary.py benches/results/repeat
"""

import json
import pathlib
import re
import sys


def run_dirs(root):
    dirs = [d for d in root.iterdir() if d.is_dir() and re.fullmatch(r"run-\d+", d.name)]
    return sorted(dirs, key=lambda d: int(d.name.split("-")[1]))


def load(path):
    """A report, or None when the run has none (`--only`) or it cannot be read (said on stderr)."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        print(f"{path}: {err}", file=sys.stderr)
        return None


RATIO = re.compile(r"→ ([0-9.]+)×")
LIMIT = re.compile(r"limit ([≤≥]) ([0-9.]+)×")


def ratio_of(detail):
    """The ratio a target's detail line states (`… → 0.52× (limit ≤ 0.4×) …`)."""
    found = RATIO.search(detail)
    return float(found.group(1)) if found else None


def limit_of(name, detail):
    found = LIMIT.search(detail)
    if found:
        return f"{found.group(1)} {found.group(2)}×"
    found = re.search(r"([≤≥]) ([0-9.]+) ×", name)
    return f"{found.group(1)} {found.group(2)}×" if found else ""


def targets(report_dir):
    """(workload, target name) -> (ratio, met, detail) for one run."""
    out = {}
    datapath = load(report_dir / "datapath.json")
    if datapath:
        for target in datapath.get("targets", []):
            out[("keep-alive", target["name"])] = target
    workloads = load(report_dir / "workloads.json")
    if workloads:
        for workload in workloads.get("workloads", []):
            for target in workload.get("targets", []):
                out[(workload["workload"], target["name"])] = target
    return out


def main():
    if len(sys.argv) != 2:
        print("usage: repeat_summary.py RESULTS_DIR", file=sys.stderr)
        return 2
    root = pathlib.Path(sys.argv[1])
    dirs = run_dirs(root)
    if not dirs:
        print(f"{root}: no run-N directories", file=sys.stderr)
        return 1
    runs = [targets(d) for d in dirs]
    keys = []
    for run in runs:
        for key in run:
            if key not in keys:
                keys.append(key)
    commits, sidecars, dates = set(), set(), []
    for d in dirs:
        for name in ("datapath.json", "workloads.json"):
            report = load(d / name)
            machine = (report or {}).get("machine") or {}
            if machine.get("commit"):
                commits.add(machine["commit"])
            if machine.get("sidecar_binary"):
                sidecars.add(machine["sidecar_binary"])
            if machine.get("date_utc"):
                dates.append(machine["date_utc"])

    print(f"# Same-run targets against Envoy over {len(dirs)} consecutive runs\n")
    print(f"- runs: {', '.join(d.name for d in dirs)} in `{root}` (`bash benches/repeat.sh`)")
    if dates:
        print(f"- from {min(dates)} to {max(dates)}")
    if commits:
        print(f"- commit: {', '.join(sorted(commits))}")
    if sidecars:
        print(f"- sidecar binary: {', '.join(f'`{s}`' for s in sorted(sidecars))}")
    print(
        "- each cell: ours ÷ Envoy in that run (median of its rounds for added p99); "
        "**bold** where the target was met; *no ratio*: a configuration failed in that run, or "
        "its added latency was not positive (see the run's report)\n"
    )
    header = " | ".join(f"run {i + 1}" for i in range(len(dirs)))
    print(f"| workload | target | limit | {header} | held in every run |")
    print("|---|---|---|" + "---:|" * len(dirs) + "---|")
    held_all = 0
    for key in keys:
        workload, name = key
        cells, held, limit = [], True, ""
        for run in runs:
            target = run.get(key)
            if target is None:
                cells.append("–")
                held = False
                continue
            ratio = ratio_of(target.get("detail", ""))
            limit = limit or limit_of(name, target.get("detail", ""))
            # No ratio: a configuration failed (its report says why), or an added latency was
            # not positive (the direct path's own tail above the proxied ones').
            text = f"{ratio:.2f}×" if ratio is not None else "no ratio"
            mib = re.search(r"largest sidecar ([0-9.]+) MiB", target.get("detail", ""))
            if mib:
                text += f", {mib.group(1)} MiB"
            if target.get("met"):
                text = f"**{text}**"
            else:
                held = False
            cells.append(text)
        held_all += held
        absolute = re.search(r"([≤≥] [0-9.]+ MiB) and ", name)
        if absolute:
            limit = f"{absolute.group(1)} and {limit}"
            name = name.replace(f" {absolute.group(0)}", " ")
        short = re.sub(r" [≤≥] [0-9.]+ × Envoy's", "", name).strip()
        print(f"| {workload} | {short} | {limit} | {' | '.join(cells)} | {'yes' if held else 'no'} |")
    print(f"\n{held_all} of {len(keys)} targets held in every run.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

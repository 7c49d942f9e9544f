"""Run every benchmark: a table and JSON, each figure beside its baseline measured in
the same run on the same machine, and a chart of dyno start latency.

    benchmarks/run            the full set (< 15 minutes)
    benchmarks/run --quick    a tenth of the samples (< 3 minutes)
    benchmarks/run --only api,sandbox_boot

Results go to benchmarks/results/ (results.json, results.txt, dyno-start.png).
A benchmark module is ``benchmarks/<name>.py`` with ``collect(scale) -> list[Figure]``
(scale 1 full, 0.1 quick, 0.01 smoke) and, optionally, ``chart_samples() -> dict``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.common import Figure, table, to_json
from dynod.system import hostinfo

MODULES = ["sandbox_boot", "api", "dynos", "builds", "languages", "router", "lifecycle",
           "addons", "drains", "store", "failover"]
RESULTS = Path(__file__).resolve().parent / "results"


def machine_description() -> dict[str, str]:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return {"cores": str(os.cpu_count()), "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
            "kernel": platform.release(), "systemd": str(hostinfo.systemd_version()),
            "cgroup": hostinfo.cgroup_layout(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def write_chart(samples: dict[str, list[float]], path: Path) -> bool:
    """A box plot of dyno start latency against the baselines (needs matplotlib)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional, only for the chart

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        print("(no chart: pip install matplotlib into .venv for dyno-start.png)")
        return False
    fig, ax = plt.subplots(figsize=(8, 4.5))
    labels = list(samples)
    ax.boxplot([samples[k] for k in labels], vert=False, showfliers=True)
    ax.set_yticks(range(1, len(labels) + 1), labels)
    ax.set_xlabel("milliseconds")
    ax.set_title("dyno start latency (lower is better)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main() -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/run")
    parser.add_argument("--quick", action="store_true", help="a tenth of the samples")
    parser.add_argument("--scale", type=float, help="sample scale (1 full, 0.1 quick)")
    parser.add_argument("--only", default="", help="comma-separated benchmark names")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("run as root: benchmarks boot sandbox machines")
    scale = args.scale if args.scale is not None else (0.1 if args.quick else 1.0)
    names = [n for n in args.only.split(",") if n] or MODULES
    args.out.mkdir(parents=True, exist_ok=True)
    figures: list[Figure] = []
    charts: dict[str, list[float]] = {}
    timings: dict[str, float] = {}
    for name in names:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError:
            print(f"-- {name}: not there yet, skipped", file=sys.stderr)
            continue
        t0 = time.monotonic()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        figures += module.collect(scale)
        timings[name] = round(time.monotonic() - t0, 1)
        if hasattr(module, "chart_samples"):
            charts.update(module.chart_samples())
    desc = machine_description()
    text = ("machine: " + ", ".join(f"{k} {v}" for k, v in desc.items()) + "\n\n"
            + table(figures) + "\n")
    print(text)
    (args.out / "results.txt").write_text(text)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": desc, "scale": scale, "seconds": timings, "figures": to_json(figures)},
        indent=1))
    if charts and write_chart(charts, args.out / "dyno-start.png"):
        print(f"chart: {args.out / 'dyno-start.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared by every benchmark: figures with their baseline, printed and written as JSON.

A figure is a list of samples summarised as median, p99, min, max and n, always beside
a baseline measured in the same run on the same machine, with the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Summary:
    median: float
    p99: float
    min: float
    max: float
    n: int
    unit: str

    @classmethod
    def of(cls, samples: list[float], unit: str) -> Summary:
        ordered = sorted(samples)
        p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
        return cls(statistics.median(ordered), p99, ordered[0], ordered[-1], len(ordered),
                   unit)


@dataclass(frozen=True)
class Figure:
    name: str
    value: Summary
    baseline_name: str
    baseline: Summary

    @property
    def ratio(self) -> float:
        return self.value.median / self.baseline.median if self.baseline.median else 0.0


def timed(fn: Callable[[], object], n: int, scale: float = 1000.0) -> list[float]:
    """``n`` wall-clock samples of ``fn()``, in ms by default."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * scale)
    return out


def table(figures: list[Figure]) -> str:
    head = (f"{'figure':<46} {'median':>10} {'p99':>10} {'n':>5}   "
            f"{'baseline':<34} {'median':>10} {'ratio':>6}")
    lines = [head, "-" * len(head)]
    for f in figures:
        v, b = f.value, f.baseline
        lines.append(
            f"{f.name:<46} {v.median:>8.2f}{v.unit:>2} {v.p99:>8.2f}{v.unit:>2} {v.n:>5}   "
            f"{f.baseline_name:<34} {b.median:>8.2f}{b.unit:>2} {f.ratio:>5.2f}x")
    return "\n".join(lines)


def to_json(figures: list[Figure]) -> list[dict[str, object]]:
    return [{"name": f.name, "value": asdict(f.value), "baseline_name": f.baseline_name,
             "baseline": asdict(f.baseline), "ratio": f.ratio} for f in figures]


def write(figures: list[Figure], path: Path | None) -> None:
    print(table(figures))
    if path is not None:
        path.write_text(json.dumps(to_json(figures), indent=1))


def main(collect: Callable[..., list[Figure]], *, rounds: bool = False) -> int:
    """The command line of a benchmark that takes ``--scale`` (and ``-n``, the rounds,
    with ``rounds``) and ``--json FILE``: runs ``collect(scale[, n])``, prints the table."""
    parser = argparse.ArgumentParser()
    if rounds:
        parser.add_argument("-n", type=int)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    write(collect(args.scale, args.n) if rounds else collect(args.scale), args.json)
    return 0

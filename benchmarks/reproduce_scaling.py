"""Time ``intriguing reproduce`` cold with 1 worker and with 2, and check that both give the same numbers.

    python benchmarks/reproduce_scaling.py [--preset default] [--workers 1 2] [--keep DIR]

Each run starts cold - a fresh checkpoint cache and a fresh output folder - in a subprocess, one
after the other, so both see the same machine. The first worker count is the reference: the
script prints each wall time and its ratio to the reference's, then compares every number of the
``results.json`` files, timings and the environment excepted (they are the only things allowed to
differ), and exits with status 1 if any other number differs.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Keys whose values measure the run, not the results: they differ between any two runs. The config
# hashes name the code too: they differ only when the code changed between the runs (reported apart).
IGNORED = ("environment", "config_hash")


def run(preset: str, workers: int, folder: Path) -> float:
    """Wall seconds of one cold ``reproduce`` with ``workers`` workers (cache and output under ``folder``)."""
    command = [sys.executable, "-c", "from intriguing.cli import main; main()", "reproduce", "--preset", preset,
               "--out", str(folder / "out"), "--cache", str(folder / "cache"), "--workers", str(workers),
               "--no-progress"]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def ignored(key: str) -> bool:
    return key in IGNORED or "seconds" in key


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where two JSON documents differ, timings excepted (NaN equals NaN; floats compared exactly)."""
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in dict.fromkeys([*a, *b]) if not ignored(k)]
        return [d for k in keys for d in differences(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    return [] if a == b or both_nan else [f"{path}: {a!r} != {b!r}"]


def report(walls: dict[int, float], documents: dict[int, Any]) -> bool:
    """Print the ratios and the comparison against the first worker count; True when the numbers agree."""
    reference, *others = walls
    for workers in others:
        print(f"ratio --workers {workers} / --workers {reference}: {walls[workers] / walls[reference]:.2f} "
              "(goal for the default preset: <= 0.6, and <= 15 min with 2 workers)")
    hashes = {w: {k: v["config_hash"] for k, v in documents[w]["sections"].items()} for w in walls}
    if any(h != hashes[reference] for h in hashes.values()):
        print("note: the sections' config hashes differ: the code changed between the runs")
    agree = True
    for workers in others:
        different = differences(documents[reference], documents[workers])
        verdict = "identical" if not different else f"{len(different)} numbers differ"
        print(f"results.json, --workers {workers} vs {reference} (timings and environment excepted): {verdict}")
        for line in different[:20]:
            print(f"  {line}")
        agree = agree and not different
    return agree


def phases(walls: dict[int, float], documents: dict[int, Any]) -> None:
    """Seconds per phase and worker count, side by side: where the time goes and what scales."""
    rows = {"models + units run ahead": {w: documents[w]["training_seconds_this_run"] for w in walls}}
    for key in documents[next(iter(walls))]["timings_seconds"]:
        rows[key] = {w: documents[w]["timings_seconds"][key] for w in walls}
    rows["whole run (wall)"] = walls
    print(f"{'phase':<26}" + "".join(f"{f'--workers {w}':>14}" for w in walls))
    for phase, seconds in rows.items():
        print(f"{phase:<26}" + "".join(f"{seconds[w]:13.1f}s" for w in walls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="default", choices=("smoke", "default", "full"))
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--keep", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="reproduce-scaling-") as scratch:
        root = args.keep or Path(scratch)
        walls = {}
        for workers in args.workers:
            walls[workers] = run(args.preset, workers, root / f"workers-{workers}")
            print(f"--workers {workers}: {walls[workers]:8.1f} s cold", flush=True)
        documents = {w: json.loads((root / f"workers-{w}" / "out" / "results.json").read_text()) for w in walls}
    phases(walls, documents)
    sys.exit(0 if report(walls, documents) else 1)


if __name__ == "__main__":
    main()

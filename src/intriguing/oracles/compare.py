"""How far is an attack from the true minimum? The attack, the certified lower bound and the exact optimum, side by side.

Szegedy et al. (2014, Sec. 4.1) approximate the minimal distortion ``D(x, t)`` of Eq. 1 with box-constrained
L-BFGS and report what it finds as "the minimum distortion". On a small ReLU network the true minimum
is computable (:func:`~intriguing.oracles.mip.exact_minimal_distortion`), and bound propagation
certifies a lower bound (:func:`~intriguing.oracles.certify.certified_lower_bound`), so each example
gets the bracket ``certified <= exact <= found``. This module runs the three on the same examples
once, for the benchmark, the ``exact`` command and the report, and summarises the ratios.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.oracles.certify import certified_lower_bound
from intriguing.oracles.mip import exact_minimal_distortion

GAP = 1e-4  # relative gap on ||r||^2 below which an exact problem counts as solved
SLACK = 1e-6  # RMS slack for the ordering checks (solver tolerances)
TIMES = ("attack_seconds", "certify_seconds", "attack_cpu_seconds", "certify_cpu_seconds")  # over all examples


def compare_with_attack(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, time_limit: float = 60.0,
                        solver: str = "bnb", attack: LBFGS | None = None) -> dict[str, Any]:
    """Per-example RMS distortions (refined and paper-faithful attack, certified lower bound, exact) and a summary.

    ``model``: an ``nn.Sequential`` of Flatten/Linear/ReLU; ``x`` (N, ...) in ``[0, 1]``; ``target`` (N,).
    ``attack`` (default ``LBFGS()``, refined) is compared with the paper's own attack
    (``LBFGSConfig.paper()``, run on the same examples: not the refined attack's shortened search).
    The exact solver starts from the attack's point, and searches inside its distortion. Returns
    ``{"rows": [...], "summary": {...}, "attack_config": ...}`` (JSON-ready). Example::

        out = compare_with_attack(model, x, t, time_limit=30)
        out["summary"]["median_refined_ratio"], out["summary"]["ordered"]
    """
    found, attack_seconds, attack_cpu = _timed(lambda: (attack or LBFGS())(model, x, target=target))
    paper = LBFGS(LBFGSConfig.paper())(model, x, target=target)
    lower, certify_seconds, certify_cpu = _timed(
        lambda: certified_lower_bound(model, x, target, upper=found.distortion))
    exact = exact_minimal_distortion(model, x, target, start=found.adversarial, time_limit=time_limit, solver=solver)
    rows = [_row(i, float(found.distortion[i]), float(paper.distortion[i]), float(lower[i]), e)
            for i, e in enumerate(exact)]
    summary = summarise(rows)
    summary.update(attack_seconds=attack_seconds, certify_seconds=certify_seconds, attack_cpu_seconds=attack_cpu,
                   certify_cpu_seconds=certify_cpu)
    return {"rows": rows, "summary": summary, "attack_config": found.config}


def joined(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One comparison from comparisons of consecutive parts of the examples (e.g. one per worker): rows
    renumbered in order, the summary recomputed, the attack's and the certificate's times added up."""
    rows, offset = [], 0
    for part in parts:
        rows += [{**row, "index": offset + row["index"]} for row in part["rows"]]
        offset += len(part["rows"])
    summary = summarise(rows)
    summary.update({key: sum(part["summary"][key] for part in parts) for key in TIMES})
    return {"rows": rows, "summary": summary, "attack_config": parts[0]["attack_config"]}


def _timed(work):
    """``(work(), wall seconds, process CPU seconds)``."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _row(i: int, refined: float, paper: float, certified: float, e) -> dict[str, Any]:
    """One example: distortions (RMS), ratios to the exact minimum, the solver's record."""
    return {"index": i, "exact": e.rms, "exact_lower": e.lower_rms, "status": e.status,
            "solved": bool(e.proven and e.gap <= GAP), "gap": e.gap, "refined": refined, "paper": paper,
            "certified": certified, "refined_ratio": refined / e.rms, "paper_ratio": paper / e.rms,
            "certified_ratio": certified / e.rms, "seconds": e.seconds, "cpu_seconds": e.cpu_seconds,
            "nodes": e.nodes, "binaries": e.binaries}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians and worst ratios over the solved examples, and whether every bracket is ordered.

    ``ordered``: certified <= exact for every solved example (the exact value is only proven
    there) and exact <= found for every example each attack solved (the solver starts from the
    refined attack's point; the paper's attack finds a feasible point too).
    """
    solved = [r for r in rows if r["solved"]]
    ordered = all(r["certified"] <= r["exact"] + SLACK for r in solved) and all(
        math.isnan(r[found]) or r["exact"] <= r[found] + SLACK  # NaN: the attack failed
        for r in rows for found in ("refined", "paper"))
    out: dict[str, Any] = {"examples": len(rows), "solved": len(solved), "ordered": ordered,
                           "exact_seconds": sum(r["seconds"] for r in rows),
                           "exact_cpu_seconds": sum(r["cpu_seconds"] for r in rows),
                           "max_exact_seconds": max((r["seconds"] for r in rows), default=0.0)}
    for key in ("refined_ratio", "paper_ratio", "certified_ratio"):
        values = [r[key] for r in solved if not math.isnan(r[key])]
        out[f"median_{key}"] = statistics.median(values) if values else None
        out[f"worst_{key}"] = (min(values) if key == "certified_ratio" else max(values)) if values else None
    return out

"""Report section ``table1``: the six models of Table 1, their errors and minimum distortions (Section 4.2).

Each model is trained on the full training set and attacked on the same random training examples;
its "average minimum distortion" is the mean RMS distortion of the successful attacks. The attacks
are stored and reused by ``table2``.
"""

from __future__ import annotations

from typing import Any

from intriguing.paper.sections._transfer import (CROSS_MODEL, SETTINGS, clean_examples, comparison, models_of,
                                                 prepare, protocol_note)
from intriguing.paper.tables import paper
from intriguing.paper.verdicts import all_positive, at_least, gap, listed, undecided_note
from intriguing.runner import Claim, Context, Section
from intriguing.transfer import error_estimate

KEY = "table1"


def run(ctx: Context, s: Any, _: dict) -> dict[str, Any]:
    """Table 1: training and test error, and the average minimum distortion over attacked training examples."""
    prepared = prepare(ctx, s, CROSS_MODEL, share=0.9)
    ctx.stage("errors on the training and test sets", 0.95)
    train, test = (clean_examples(ctx, s, split) for split in ("train", "test"))
    rows = {
        column: {"train_error": error_estimate(model, *train), "test_error": error_estimate(model, *test),
                 "av_min_distortion": prepared.attacked(column).mean_distortion()}
        for column, model in prepared.models.items()
    }
    return {"columns": list(paper(KEY)["columns"]), "rows": rows, **prepared.protocol}


def render(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Errors on undistorted training and test images; the distortion is averaged over the attacked training "
        "examples (successful attacks).", comparison(result, KEY, ctx), protocol_note(result)])


SUCCESS = 0.99  # "every model has adversarial examples": the attack reaches its target this often
PER_MODEL = "attacked examples per model"


def claims(result: dict[str, Any]) -> list[Claim]:
    """Every model has adversarial examples; weight decay raises the distortion they need (Table 1).

    Both are decided by 95% intervals (:mod:`intriguing.paper.verdicts`), never by point estimates.
    """
    return [_every_model_fooled(result), _weight_decay_trend(result)]


def _every_model_fooled(result: dict[str, Any]) -> Claim:
    gaps = {c: at_least(e, SUCCESS) for c, e in result["attack_success"].items()}
    found = all_positive(gaps)
    success = "; ".join(f"{c} {100 * e['value']:.1f}% ({100 * e['low']:.1f}–{100 * e['high']:.1f}%)"
                        for c, e in result["attack_success"].items())
    return Claim(KEY, f"Every model has adversarial examples (Sec. 4.2): for every model the targeted attack "
                 f"succeeds on at least {SUCCESS:.0%} of the examples (95% Wilson interval above {SUCCESS:.0%})",
                 found.holds, f"success: {success}" + undecided_note(found, PER_MODEL), needed_n=found.needed_n)


def _weight_decay_trend(result: dict[str, Any]) -> Claim:
    """FC10(1e-4) < FC10(1e-2) < FC10(1) in mean minimum distortion, each step's interval above 0."""
    cells = {lam: result["rows"][f"FC10({lam})"]["av_min_distortion"] for lam in ("1e-4", "1e-2", "1")}
    gaps = {"FC10(1e-2) − FC10(1e-4)": gap(cells["1e-2"], cells["1e-4"]),
            "FC10(1) − FC10(1e-2)": gap(cells["1"], cells["1e-2"])}
    found = all_positive(gaps)
    return Claim(KEY, "Stronger weight decay makes a softmax model need larger distortions: "
                 "FC10(1e-4) < FC10(1e-2) < FC10(1) in mean minimum distortion (paper: 0.062 < 0.10 < 0.14)",
                 found.holds, f"differences with 95% intervals: {listed(gaps.items(), percent=False)}"
                 + undecided_note(found, PER_MODEL), needed_n=found.needed_n)


# Seconds per preset on an idle 2-core machine: training (the zoo's cached checkpoints make that
# free) and attacking (~4 s per 1,000 examples per model); Table 2 reuses both.
SECTION = Section(key=KEY, title="Table 1: the models, their errors and minimum distortions", run=run, render=render,
                  settings=SETTINGS, estimate_seconds={"smoke": 8, "default": 240, "full": 1_800}, claims=claims,
                  models=models_of(CROSS_MODEL))

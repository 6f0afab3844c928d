"""Report section ``table3``: models trained on the disjoint halves P1 and P2 of the training set (Section 4.2).

Table 3 lists their errors on P1, P2 and test, and the mean minimum distortion of their adversarial
test examples; the attacks are stored and reused by ``table4``.
"""

from __future__ import annotations

from typing import Any

from intriguing.paper.sections._transfer import (CROSS_TRAINING_SET, SETTINGS, clean_examples, comparison,
                                                 models_of, prepare, protocol_note)
from intriguing.paper.tables import paper
from intriguing.runner import Context, Section
from intriguing.transfer import error_estimate

KEY = "table3"


def run(ctx: Context, s: Any, _: dict) -> dict[str, Any]:
    """Table 3: errors on P1, P2 and test of the P1/P2 models, and the mean minimum distortion on test examples."""
    prepared = prepare(ctx, s, CROSS_TRAINING_SET, share=0.9)
    ctx.stage("errors on P1, P2 and test", 0.95)
    splits = {f"error_{split}": clean_examples(ctx, s, split) for split in ("P1", "P2", "test")}
    rows = {}
    for column, _name, on in CROSS_TRAINING_SET.models:
        model = prepared.models[column]
        rows[f"{column} (trained on {on})"] = {
            **{key: error_estimate(model, *split) for key, split in splits.items()},
            "min_av_distortion": prepared.attacked(column).mean_distortion(),
        }
    return {"columns": list(paper(KEY)["columns"]), "rows": rows, **prepared.protocol}


def render(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Errors on undistorted data; the distortion is averaged over the attacked *test* examples.",
        comparison(result, KEY, ctx), protocol_note(result)])


SECTION = Section(key=KEY, title="Table 3: models trained on disjoint halves P1 and P2", run=run, render=render,
                  settings=SETTINGS, estimate_seconds={"smoke": 3, "default": 90, "full": 250},
                  models=models_of(CROSS_TRAINING_SET))

"""Report section ``table4``: cross-training-set generalization (Section 4.2).

Adversarial test examples of Table 3's models (stored by ``table3``), Gaussian noise, and each
model's perturbations amplified to RMS 0.1 are fed to the three models trained on P1 or P2.
"""

from __future__ import annotations

from typing import Any

from intriguing.paper.sections._tabulate import in_paper_order, matched_row, noise_seeds, transfer_result
from intriguing.paper.sections._transfer import CROSS_TRAINING_SET, SETTINGS, comparison, models_of, protocol_note
from intriguing.paper.tables import paper
from intriguing.paper.verdicts import all_positive, gap, listed, undecided_note
from intriguing.runner import Claim, Context, Section
from intriguing.transfer import amplified_row, gaussian_row

KEY = "table4"
NOISE = (0.06, 0.1)
AMPLIFIED = 0.1


def row_name(row: str) -> str:
    """The paper's Table 4 name of a transfer-table row (the paper puts its measured distortion in it)."""
    if row.startswith("Gaussian noise, "):
        return row.replace("Gaussian noise, ", "Gaussian noise with ")
    if " amplified to " in row:
        return f"Distorted for {row}"
    prefix = f"Distorted for {row} (av. stddev="
    return next(name for name in paper(KEY)["rows"] if name.startswith(prefix))


def run(ctx: Context, s: Any, _: dict) -> dict[str, Any]:
    """Table 4: cross-training-set generalization on test examples, noise rows and amplified rows."""
    prepared, transferred = transfer_result(ctx, s, CROSS_TRAINING_SET, NOISE, AMPLIFIED, matched=NOISE)
    return {"columns": list(paper(KEY)["columns"]),
            "rows": in_paper_order(KEY, {row_name(row): cells for row, cells in transferred.rows.items()}),
            "row_distortion": in_paper_order(KEY, {row_name(row): d for row, d in transferred.distortion.items()}),
            "noise_seeds": noise_seeds(NOISE, NOISE, s.seed),
            **prepared.protocol}


def render(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Adversarial examples made on the test set for each model (rows; each counts the examples its model "
        "classifies correctly) fed to the three models; noise rows below the paper's are scaled to a realised RMS "
        "equal to the stated value (the claims use them); the paper's row "
        "names carry its own average distortion (noise and amplified rows: the nominal stddev); ours, realised after "
        "clipping to [0, 1], is in the last column.",
        comparison(result, KEY, ctx, {"mean distortion, RMS (ours)": result["row_distortion"]}), protocol_note(result)])


def claims(result: dict[str, Any]) -> list[Claim]:
    """Examples transfer across training sets, weaker than within; amplified ones strongly (Table 4)."""
    models = result["columns"]
    adversarial = {m: row_name(m) for m in models}
    amplified = {m: row_name(amplified_row(m, AMPLIFIED)) for m in models}
    small, same = (_noise_row(result, sd) for sd in NOISE)
    pairs = [(r, c) for r in models for c in models if r != c]
    cells = result["rows"]
    weaker = {f"{r} on {c}": gap(cells[adversarial[r]][r], cells[adversarial[r]][c]) for r, c in pairs}
    present = {f"{r} on {c}": gap(cells[adversarial[r]][c], cells[small][c]) for r, c in pairs}
    stronger = {f"{r} on {c}": gap(cells[amplified[r]][c], cells[adversarial[r]][c]) for r, c in pairs}
    beyond = {f"{r} on {c}": gap(cells[amplified[r]][c], cells[same][c]) for r, c in pairs}
    rms = {row: result["row_distortion"][row]["value"] for row in (small, same, *amplified.values())}
    amplified_rms = ", ".join(f"{rms[amplified[m]]:.3f}" for m in models)
    return [
        _claim("Adversarial examples transfer to models trained on another training set, weaker but present: "
               f"every off-diagonal cell is below its row's diagonal and above Gaussian noise of realised RMS "
               f"{rms[small]:.3f} after clipping (the paper's row: stddev {NOISE[0]:g}) in its column",
               {"diagonal − off-diagonal": weaker, "off-diagonal − noise": present}),
        _claim(f"Perturbations amplified to RMS {AMPLIFIED:g} (realised after clipping: {amplified_rms}) transfer "
               "strongly: every off-diagonal cell is above the unamplified row's and above Gaussian noise of "
               f"realised RMS {rms[same]:.3f} (the paper's row: stddev {NOISE[1]:g}) in its column",
               {"amplified − unamplified": stronger, "amplified − noise": beyond}),
    ]


def _noise_row(result: dict[str, Any], stddev: float) -> str:
    """The matched noise row of size ``stddev`` (realised RMS), or the nominal one in results without it."""
    matched = row_name(matched_row(stddev))
    return matched if matched in result["rows"] else row_name(gaussian_row(stddev))


def _claim(statement: str, groups: dict[str, dict[str, Any]]) -> Claim:
    """A claim that every gap of every group is positive, with each group's gaps as its evidence."""
    found = all_positive({f"{g}, {name}": d for g, gaps in groups.items() for name, d in gaps.items()})
    evidence = " · ".join(f"{g} (95% interval): {listed(gaps.items())}" for g, gaps in groups.items())
    return Claim(KEY, statement, found.holds, evidence + undecided_note(found, "attacked test examples per model"),
                 needed_n=found.needed_n)


SECTION = Section(key=KEY, title="Table 4: cross-training-set generalization", run=run, render=render,
                  settings=SETTINGS, estimate_seconds={"smoke": 1, "default": 2, "full": 10}, claims=claims,
                  models=models_of(CROSS_TRAINING_SET))

"""Report section ``table2``: cross-model generalization of adversarial examples (Section 4.2, Fig. 7).

Each of Table 1's models' adversarial examples (stored by ``table1``) and two Gaussian-noise
controls are fed to all six models. The section also draws the Fig. 7-like grid of adversarial
examples beside noise of the same size.
"""

from __future__ import annotations

from typing import Any

from intriguing.paper.sections._tabulate import in_paper_order, matched_row, noise_seeds, transfer_result
from intriguing.paper.sections._transfer import (CROSS_MODEL, DISTORTION_COLUMNS, SETTINGS, comparison, models_of,
                                                 protocol_note)
from intriguing.paper.tables import paper
from intriguing.paper.verdicts import all_positive, at_least, average, gap, listed, undecided_note
from intriguing.report.figures.transfer import save_adversarial_figure
from intriguing.runner import Claim, Context, Section
from intriguing.transfer import gaussian_row

KEY = "table2"
NOISE = (0.1, 0.3)
FIG7C = 1.0  # Fig. 7(c): "Gaussian noise with stddev=1. Accuracy: 51%"
FIGURE = "fig7_adversarial_vs_noise.png"


def run(ctx: Context, s: Any, _: dict) -> dict[str, Any]:
    """Table 2: cross-model generalization, with Gaussian noise rows; also draws the Fig. 7-like grid."""
    prepared, transferred = transfer_result(ctx, s, CROSS_MODEL, (*NOISE, FIG7C), None, matched=NOISE)
    rows = in_paper_order(KEY, {row: {**cells, "av_distortion": transferred.distortion[row]}
                                for row, cells in transferred.rows.items()})
    ctx.stage("draw Fig. 7", 0.95)
    save_adversarial_figure(ctx.figures / FIGURE, prepared.models, prepared.x,
                            {c: a.adversarial for c, a in prepared.adversarial.items()}, seed=s.seed, labels=prepared.y)
    return {"columns": list(paper(KEY)["columns"]), "rows": rows,
            "noise_seeds": noise_seeds((*NOISE, FIG7C), NOISE, s.seed),
            "figure": f"figures/{FIGURE}", **prepared.protocol}


def render(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Rows: examples distorted for the row's model (or noise); columns: the model fed with them; cells: its "
        "error rate. Each row counts the examples its model classifies correctly; noise rows count them all. "
        "Noise is clipped to [0, 1], so its realised RMS (ours, in the mean distortion column) is below the nominal "
        "stddev that the paper lists there; the rows below the paper's scale the same draws to a realised RMS equal "
        "to the stated value (the claims use them), and add Fig. 7(c)'s noise of stddev 1.",
        comparison(result, KEY, ctx), protocol_note(result),
        f"![Adversarial examples beside Gaussian noise of the same RMS (cf. the paper's Fig. 7)]({result['figure']})"])


PER_MODEL = "attacked examples per model"


def claims(result: dict[str, Any]) -> list[Claim]:
    """Adversarial examples fool their own model, and other models more than noise does (Table 2).

    Decided by 95% intervals (:mod:`intriguing.paper.verdicts`): the diagonal's Wilson intervals
    above 99%; each column's mean off-diagonal error above the noise row's.
    """
    models = [c for c in result["columns"] if c not in DISTORTION_COLUMNS]
    diagonal = {m: at_least(result["rows"][m][m], 0.99) for m in models}
    found = all_positive(diagonal)
    return [
        Claim(KEY, "Adversarial examples fool the model they were made for: every diagonal cell's 95% interval "
              "lies above 99%", found.holds,
              "diagonal − 99%: " + listed(diagonal.items()) + undecided_note(found, PER_MODEL),
              needed_n=found.needed_n),
        _beats_noise(result, models, NOISE[0]),
        _autoencoder_most_resilient(result, models),
        *_heavy_noise_spares(result, models),
    ]


def _accuracy(error: dict[str, Any]) -> dict[str, Any]:
    return {"value": 1 - error["value"], "low": 1 - error["high"], "high": 1 - error["low"], "n": error["n"]}


def _heavy_noise_spares(result: dict[str, Any], models: list[str], chance: float = 0.1) -> list[Claim]:
    """Fig. 7(c): noise of stddev 1 ("Accuracy: 51%") harms far less than adversarial perturbations a tenth
    its size: every model's accuracy under it is above chance and above its accuracy on its own
    adversarial examples. Absent from results computed without the Fig. 7(c) row."""
    row = gaussian_row(FIG7C)
    if row not in result["rows"]:
        return []
    noisy = {m: _accuracy(result["rows"][row][m]) for m in models}
    gaps = {**{f"{m} − chance": at_least(noisy[m], chance) for m in models},
            **{f"{m} − own adversarial": gap(noisy[m], _accuracy(result["rows"][m][m])) for m in models}}
    found = all_positive(gaps)
    rms = result["rows"][row]["av_distortion"]["value"]
    accuracy = "; ".join(f"{m} {100 * a['value']:.1f}% ({100 * a['low']:.1f}–{100 * a['high']:.1f}%)"
                         for m, a in noisy.items())
    return [Claim(KEY, f"Gaussian noise of stddev {FIG7C:g} (Fig. 7(c); realised RMS {rms:.3f} after clipping) leaves "
                       f"every model's accuracy above chance ({chance:.0%}) and above its accuracy on its own "
                       "adversarial examples (paper: 51%)",
                  found.holds, f"accuracy under the noise: {accuracy}; accuracy gaps (95% interval): "
                  + listed(gaps.items()) + undecided_note(found, PER_MODEL), needed_n=found.needed_n)]


def _autoencoder_most_resilient(result: dict[str, Any], models: list[str], resilient: str = "AE400-10") -> Claim:
    """Sec. 4.2: the autoencoder is the most resilient to other models' adversarial examples: its column's
    mean off-diagonal error is below every other column's (the paper's: 10% against 18-69%)."""
    column = {c: average([result["rows"][r][c] for r in models if r != c]) for c in models}
    gaps = {c: gap(column[c], column[resilient]) for c in models if c != resilient}
    found = all_positive(gaps)
    return Claim(
        KEY, f"The autoencoder ({resilient}) is the most resilient to adversarial examples made for other models: "
             "its column's mean off-diagonal error is below every other column's",
        found.holds, f"other column − {resilient} column, mean off-diagonal error: " + listed(gaps.items())
        + undecided_note(found, PER_MODEL), needed_n=found.needed_n)


def _beats_noise(result: dict[str, Any], models: list[str], stddev: float) -> Claim:
    """Each column's mean error on the other models' adversarial examples against the noise row's error."""
    row = matched_row(stddev) if matched_row(stddev) in result["rows"] else gaussian_row(stddev)
    rms = result["rows"][row]["av_distortion"]["value"]
    gaps = {c: gap(average([result["rows"][r][c] for r in models if r != c]), result["rows"][row][c]) for c in models}
    found = all_positive(gaps)
    return Claim(
        KEY, f"Adversarial examples made for other models cause more errors than Gaussian noise of realised RMS "
             f"{rms:.3f} after clipping to [0, 1] (the paper's row: stddev {stddev:g}): in every column the mean "
             "off-diagonal error is above the noise row's",
        found.holds, "mean off-diagonal − noise, per column: " + listed(gaps.items())
        + undecided_note(found, PER_MODEL), needed_n=found.needed_n)


SECTION = Section(key=KEY, title="Table 2: cross-model generalization of adversarial examples", run=run,
                  render=render, settings=SETTINGS, estimate_seconds={"smoke": 3, "default": 10, "full": 60},
                  claims=claims, models=models_of(CROSS_MODEL))

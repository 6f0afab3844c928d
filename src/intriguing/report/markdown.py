"""The report's Markdown: the paper's number and ours side by side in every cell, and the whole page.

Every section renders its own Markdown fragment with these helpers: :func:`cell` shows the paper's
number, ours with its interval and a mark where the difference matters (:func:`differs`);
:func:`table` lays out a Markdown table with :func:`header` names in words; :func:`markdown_document`
joins the sections under a title that names the dataset, a table of contents and the summary of
claims (:mod:`intriguing.report.summary`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from intriguing import data
from intriguing.report.summary import claims_summary, sanity_summary, short_title
from intriguing.runner.section import UNJUDGED_PRESETS, dataset_name

TITLE = "Intriguing properties of neural networks: reproduction report"

# A difference is "large" when the paper's number lies outside our 95% CI *and* is far from ours
# in absolute terms: 5 percentage points for rates, 25% (relative) for distortions and other sizes.
RATE_TOLERANCE = 0.05
RELATIVE_TOLERANCE = 0.25
LARGE = "⚠"
LEGEND = (
    f"Each cell: paper · **ours** (95% CI). {LARGE} marks a large difference: the paper's value lies "
    f"outside our interval and differs by at least {100 * RATE_TOLERANCE:.0f} percentage points "
    f"(rates) or {100 * RELATIVE_TOLERANCE:.0f}% (distortions)."
)

# The results' column names (the paper's JSON keys) in words.
HEADERS = {
    "train_error": "training error", "test_error": "test error", "error_P1": "error on P1", "error_P2": "error on P2",
    "error_test": "test error", "av_min_distortion": "mean minimum distortion (RMS)",
    "min_av_distortion": "mean minimum distortion (RMS)", "av_distortion": "mean distortion (RMS)",
}


def header(name: str) -> str:
    """A column name in words (``"train_error"`` -> ``"training error"``); model names stay as they are."""
    return HEADERS.get(name, name)


def number(value: float | None, kind: str) -> str:
    """``kind`` "rate" prints a percentage (0.117 -> "11.7%"); anything else three decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100 * value:.1f}%" if kind == "rate" else f"{value:.3f}"


def differs(paper: float | None, ours: Mapping[str, Any], kind: str) -> bool:
    """Whether ours (an estimate ``{"value", "low", "high"}``) differs from the paper in a way that matters."""
    value, low, high = ours.get("value"), ours.get("low"), ours.get("high")
    if paper is None or value is None:
        return False
    inside = low is not None and high is not None and low <= paper <= high
    gap = abs(value - paper)
    far = gap >= RATE_TOLERANCE if kind == "rate" else gap >= RELATIVE_TOLERANCE * abs(paper)
    return far and not inside


def cell(paper: float | None, ours: Mapping[str, Any] | None, kind: str = "rate", mark: bool = True) -> str:
    """One table cell: the paper's number, ours in bold with its interval, and the large-difference mark.

    ``mark=False`` leaves the mark out where the paper's number is context, not a reference (another
    dataset, a smoke run, a nominal value we report realised).
    """
    if ours is None:
        return f"{number(paper, kind)} · **n/a**"
    text = f"{number(paper, kind)} · **{number(ours.get('value'), kind)}**"
    if ours.get("low") is not None and ours.get("high") is not None:
        low, high = number(ours["low"], kind), number(ours["high"], kind)
        text += f" ({low.rstrip('%')}–{high})"
    return text + (f" {LARGE}" if mark and differs(paper, ours, kind) else "")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numbers: bool = True) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned if they hold ``numbers``."""
    align = [":---"] + ["---:" if numbers else ":---"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def marks_differences(ctx: Any) -> bool:
    """Whether the paper's numbers are this run's reference: MNIST, in a preset that judges claims."""
    return ctx.preset not in UNJUDGED_PRESETS and dataset_name(ctx.data_dir) == "MNIST"


def legend(ctx: Any) -> str:
    """How to read a comparison cell in this run (said once, at the top of the report)."""
    if marks_differences(ctx):
        return LEGEND
    reason = (f"the `{ctx.preset}` preset's models are barely trained" if ctx.preset in UNJUDGED_PRESETS
              else f"the paper's numbers are MNIST's, shown as context for this {dataset_name(ctx.data_dir)} run")
    return f"Each cell: paper · **ours** (95% CI). No cell is marked as differing: {reason}."


def title(ctx: Any) -> str:
    """The report's title: the paper, and the dataset when it is not the paper's MNIST."""
    dataset = dataset_name(ctx.data_dir)
    return TITLE if dataset == "MNIST" else f"{TITLE} on {dataset}"


def anchor(key: str) -> str:
    """An HTML anchor that GitHub's Markdown and the HTML page both keep (headings' own ids differ)."""
    return f'<a id="{key}"></a>'


def _banners(document: dict[str, Any], ctx: Any) -> list[str]:
    """The lines a reader must see first: a smoke run judges nothing; another dataset is not MNIST."""
    found = []
    if ctx.preset in UNJUDGED_PRESETS:
        found.append(f"> **{UNJUDGED_PRESETS[ctx.preset]}.**")
    dataset = dataset_name(ctx.data_dir)
    if dataset != "MNIST":
        found.append(f"> **Dataset: {dataset}** (from `{data.resolve_data_dir(ctx.data_dir)}`). The paper's "
                     "numbers are MNIST's: they "
                     "are shown as context, not as the reference, and the claims are judged on this dataset's "
                     "own numbers.")
    return found


def _contents(sections: Sequence[Any]) -> str:
    entries = [("summary", "Summary: the paper's findings"), ("sanity", "Sanity checks"), ("reading", "How to read")]
    entries += [(s.key, s.title) for s in sections] + [("timings", "Timings")]
    return "\n".join(f"- [{text}](#{key})" for key, text in entries)


def markdown_document(document: dict[str, Any], sections: Sequence[Any], ctx: Any) -> str:
    """The whole report as Markdown: title, banners, contents, summary, each section's fragment, timings."""
    env = document.get("environment", {})
    timings = document.get("timings_seconds", {})
    titles = {s.key: s.title for s in sections}
    claims = document.get("claims", [])
    parts = [
        f"# {title(ctx)}", *_banners(document, ctx),
        f"Szegedy et al., ICLR 2014 ([arXiv:1312.6199](https://arxiv.org/abs/1312.6199)). Dataset "
        f"{dataset_name(ctx.data_dir)}; preset `{document['preset']}`; intriguing {env.get('intriguing', '?')}, "
        f"torch {env.get('torch', '?')}, Python {env.get('python', '?')}, {env.get('torch_threads', '?')} threads "
        f"on {env.get('platform', '?')}.",
        "## Contents", _contents(sections),
        f"{anchor('summary')}\n\n## Summary: the paper's findings", claims_summary(claims, titles),
        f"{anchor('sanity')}\n\n## Sanity checks", sanity_summary(claims, titles),
        f"{anchor('reading')}\n\n## How to read", legend(ctx),
    ]
    for section in sections:
        parts.append(f"{anchor(section.key)}\n\n## {section.title}")
        parts.append(section.render(document[section.key], ctx))
    parts.append(f"{anchor('timings')}\n\n## Timings")
    parts.append(table(["section", "seconds"], [[short_title(s.title), f"{timings.get(s.key) or 0:.1f}"]
                                                for s in sections]))
    return "\n\n".join(parts) + "\n"

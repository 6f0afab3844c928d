"""The report: ``report.md`` and ``report.html`` rendered from ``results.json`` (STYLE.md #5).

Every section renders its own Markdown fragment; this module joins them under a header and a
summary of the paper's qualitative claims, and turns the Markdown into one standalone HTML page
(figures embedded, so the page can be mailed on its own). It also holds the helpers sections use to
show the paper's number and ours side by side in every cell (:func:`cell`, :func:`table`), with the
differences that matter marked (:func:`differs`).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import markdown

from intriguing import records

CSS = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""

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
VERDICTS = {True: "holds", False: "does not hold", None: "undecided"}


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


def cell(paper: float | None, ours: Mapping[str, Any] | None, kind: str = "rate") -> str:
    """One table cell: the paper's number, ours in bold with its interval, and the large-difference mark."""
    if ours is None:
        return f"{number(paper, kind)} · **n/a**"
    text = f"{number(paper, kind)} · **{number(ours.get('value'), kind)}**"
    if ours.get("low") is not None and ours.get("high") is not None:
        low, high = number(ours["low"], kind), number(ours["high"], kind)
        text += f" ({low.rstrip('%')}–{high})"
    return text + (f" {LARGE}" if differs(paper, ours, kind) else "")


def table(header: Sequence[str], rows: Sequence[Sequence[str]], numbers: bool = True) -> str:
    """A Markdown table: the first column left-aligned, the others right-aligned if they hold ``numbers``."""
    align = [":---"] + ["---:" if numbers else ":---"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def claims_summary(claims: Sequence[Mapping[str, Any]]) -> str:
    """The paper's qualitative claims, each with our verdict and the numbers behind it."""
    if not claims:
        return "No section in this run checks a qualitative claim."
    held = sum(c["holds"] is True for c in claims)
    rows = [[c["section"], c["statement"], f"**{VERDICTS[c['holds']]}**", c["evidence"]] for c in claims]
    header = ["section", "paper's claim", "ours", "evidence"]
    return f"{held} of {len(claims)} claims hold.\n\n" + table(header, rows, numbers=False)


def markdown_document(document: dict[str, Any], sections: Sequence[Any], ctx: Any) -> str:
    """The whole report as Markdown: header, claims summary, each section's fragment, timings."""
    env = document.get("environment", {})
    timings = document.get("timings_seconds", {})
    parts = [
        f"# {TITLE}",
        f"Szegedy et al., ICLR 2014 ([arXiv:1312.6199](https://arxiv.org/abs/1312.6199)). "
        f"Preset `{document['preset']}`; intriguing {env.get('intriguing', '?')}, torch {env.get('torch', '?')}, "
        f"Python {env.get('python', '?')}, {env.get('torch_threads', '?')} threads on {env.get('platform', '?')}.",
        "## Summary: the paper's claims",
        claims_summary(document.get("claims", [])),
    ]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.append(section.render(document[section.key], ctx))
    parts.append("## Timings")
    parts.append(table(["section", "seconds"], [[s.key, f"{timings.get(s.key) or 0:.1f}"] for s in sections]))
    return "\n\n".join(parts) + "\n"


_IMG_SRC = re.compile(r'(<img\b[^>]*?\bsrc=")([^"]+)(")')


def _embed_images(body: str, folder: Path) -> str:
    """Replace relative PNG links under ``folder`` by data URIs, so the HTML stands alone."""

    def inline(match: re.Match) -> str:
        path = folder / html.unescape(match.group(2))
        if "://" in match.group(2) or path.suffix.lower() != ".png" or not path.is_file():
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f"{match.group(1)}data:image/png;base64,{data}{match.group(3)}"

    return _IMG_SRC.sub(inline, body)


def to_html(text: str, title: str = TITLE, figures_root: Path | None = None) -> str:
    """A standalone HTML page from the Markdown ``text``; PNGs under ``figures_root`` are embedded."""
    body = markdown.markdown(text, extensions=["tables", "fenced_code"], output_format="html")
    if figures_root is not None:
        body = _embed_images(body, figures_root)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write(document: dict[str, Any], sections: Sequence[Any], ctx: Any) -> None:
    """Write ``report.md`` and ``report.html`` into ``ctx.out`` (atomically)."""
    text = markdown_document(document, sections, ctx)
    records.write_bytes(ctx.out / "report.md", text.encode())
    records.write_bytes(ctx.out / "report.html", to_html(text, figures_root=ctx.out).encode())

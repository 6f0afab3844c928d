"""The report's summary: the paper's findings with our verdicts, and the sanity checks kept apart.

A finding is one of the paper's qualitative claims, judged by a confidence interval or a test
(holds / does not hold / undecided, with the sample size that would decide it). A sanity check is a
mathematical guarantee checked on our numbers (Section 4.3: an upper bound is above the exact
value); it tests the code, not the paper, so it is listed apart and never counted as a finding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from intriguing.runner.section import SANITY

VERDICTS = {True: "holds", False: "does not hold", None: "undecided"}
RULE = ("Every verdict is decided by a 95% confidence interval or a test, never by a point estimate; an undecided "
        "one says roughly what sample size would decide it if the observed gap stayed the same.")


def short_title(title: str) -> str:
    """A section's title up to its colon or parenthesis: "Table 1", "Units versus random directions"."""
    return title.split(":")[0].split(" (")[0].strip()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _section(claim: Mapping[str, Any], titles: Mapping[str, str]) -> str:
    key = claim["section"]
    return f"[{short_title(titles.get(key, key))}](#{key})"


def _verdict(claim: Mapping[str, Any]) -> str:
    text = f"**{VERDICTS[claim['holds']]}**"
    needed = claim.get("needed_n")
    return text + (f" (N ≈ {needed:,} would decide)" if claim["holds"] is None and needed else "")


def findings(claims: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The paper's findings among ``claims`` (sanity checks left out)."""
    return [c for c in claims if c.get("kind", "finding") != SANITY]


def claims_summary(claims: Sequence[Mapping[str, Any]], titles: Mapping[str, str] | None = None) -> str:
    """The paper's findings, each with our verdict and the interval or test behind it."""
    found = findings(claims)
    titles = titles or {}
    if not found:
        return "No section in this run checks one of the paper's findings."
    counts = {v: sum(c["holds"] is k for c in found) for k, v in VERDICTS.items()}
    rows = [[_section(c, titles), c["statement"], _verdict(c), c["evidence"]] for c in found]
    return (f"Of {len(found)} findings: {counts['holds']} hold, {counts['does not hold']} do not hold, "
            f"{counts['undecided']} undecided. {RULE}\n\n"
            + _table(["section", "the paper's finding", "ours", "evidence (95% intervals, tests)"], rows))


def sanity_summary(claims: Sequence[Mapping[str, Any]], titles: Mapping[str, str] | None = None) -> str:
    """The guarantees checked on our numbers: they test the code, not the paper."""
    checks = [c for c in claims if c.get("kind") == SANITY]
    if not checks:
        return "No section in this run has a sanity check."
    rows = [[_section(c, titles or {}), c["statement"], f"**{VERDICTS[c['holds']]}**", c["evidence"]] for c in checks]
    return ("Mathematical guarantees, checked on our numbers: a failure is a bug in this toolkit, not a finding "
            "about the paper; they are not counted among the findings.\n\n"
            + _table(["section", "guarantee", "ours", "evidence"], rows))

"""Report section ``deviations``: every departure from Szegedy et al. 2014, what the paper says, what we do, why.

The rows are :data:`intriguing.paper.deviations.DEVIATIONS`, stored with the run's results so that a
results file says which protocol its numbers follow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from intriguing.paper.deviations import DEVIATIONS, Deviation, markdown_table
from intriguing.runner import Context, Section

KEY = "deviations"


def run(ctx: Context, settings: Any, _: dict) -> dict[str, Any]:
    """The deviations as data (nothing is computed)."""
    return {"rows": [dataclasses.asdict(d) for d in DEVIATIONS]}


def render(result: dict[str, Any], ctx: Context) -> str:
    return ("What each number of this report means where it departs from the paper; read it before comparing.\n\n"
            + markdown_table(tuple(Deviation(**row) for row in result["rows"])))


SECTION = Section(key=KEY, title="Deviations from the paper", run=run, render=render,
                  estimate_seconds={"smoke": 0, "default": 0, "full": 0})

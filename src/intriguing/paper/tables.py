"""The paper's published numbers (Tables 1-5 and the adversarial-training claim), shipped in the package."""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from intriguing.errors import unknown_name_error


@functools.lru_cache(maxsize=1)
def _paper_tables() -> dict[str, Any]:
    text = resources.files("intriguing").joinpath("resources/szegedy2013_tables.json").read_text("utf-8")
    return json.loads(text)


def paper(key: str) -> dict[str, Any]:
    """The paper's numbers for ``key`` (``"table1"`` ... ``"table5"``, ``"adversarial_training"``)."""
    tables = _paper_tables()
    if key not in tables or not isinstance(tables[key], dict):
        raise unknown_name_error("paper table", key, [k for k, v in tables.items() if isinstance(v, dict)])
    return tables[key]

"""Where a run keeps finished sections: one atomically written JSON file each, keyed by what made it.

A stored section is reused only when its digest (a SHA-256 of the record) and its hash match: the section's key and preset, its chosen
settings, the dataset and the code version of the library that computed it. A file that cannot be
read (a run killed by an older version, a disk that filled up) is reported and recomputed, never
trusted and never fatal.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from intriguing import records
from intriguing.runner.kept import library_version, read_record, record_digest
from intriguing.runner.section import Context, Section
from intriguing.versions import code_version


def config_hash(section: Section, ctx: Context) -> str:
    """Names what a stored section result depends on: its settings, the data and the library code,
    together with the section's own package (its ``run`` and the helpers it shares with its siblings
    are code too)."""
    module = getattr(section.run, "__module__", None) or ""
    blob = json.dumps(
        {"key": section.key, "preset": ctx.preset, "settings": records.to_jsonable(section.chosen(ctx.preset)),
         "data_dir": ctx.data_dir, "library": library_version(),
         "section_code": code_version(module.rpartition(".")[0] or module) if module else None,
         # Another device gives other floats: its results are its own (CPU runs keep their old hashes).
         **({"device": ctx.device} if ctx.device != "cpu" else {})}, sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def section_path(ctx: Context, key: str) -> Path:
    return ctx.out / "sections" / f"{key}.json"


def stored(ctx: Context, section: Section) -> dict[str, Any] | None:
    """The section's saved record if it was computed with the current configuration and code, else None."""
    record = read_record(section_path(ctx, section.key), f"section {section.key!r}")
    if record is None:
        return None
    if isinstance(record["result"], dict) and "skipped" in record["result"]:
        return None  # a section skipped for a missing optional extra runs again once it is installed
    return record if record.get("config_hash") == config_hash(section, ctx) else None


def store(ctx: Context, section: Section, result: Any, seconds: float) -> dict[str, Any]:
    """Write one finished section atomically (a kill never leaves half a file) and return its record."""
    record = {"config_hash": config_hash(section, ctx), "seconds": seconds,
              "settings": records.to_jsonable(section.chosen(ctx.preset)), "result": records.to_jsonable(result)}
    record["digest"] = record_digest(record)
    records.write_json(section_path(ctx, section.key), record)
    return record

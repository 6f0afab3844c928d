"""The report layer: ``report.md`` and ``report.html`` rendered from a run's ``results.json``.

Sections render their own fragments with :mod:`intriguing.report.markdown`; figures are drawn by
:mod:`intriguing.report.figures` (the only place matplotlib is imported). The library never
imports this package: it returns data, the report shows it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from intriguing import records
from intriguing.report.html import to_html
from intriguing.report.markdown import cell, differs, header, markdown_document, number, table, title

__all__ = ["cell", "differs", "header", "markdown_document", "number", "table", "title", "to_html", "write"]


def write(document: dict[str, Any], sections: Sequence[Any], ctx: Any) -> None:
    """Write ``report.md`` and ``report.html`` into ``ctx.out`` (atomically)."""
    text = markdown_document(document, sections, ctx)
    records.write_bytes(ctx.out / "report.md", text.encode())
    records.write_bytes(ctx.out / "report.html", to_html(text, title=title(ctx), figures_root=ctx.out).encode())

"""The report: ``report.md`` and ``report.html`` rendered from ``results.json`` (STYLE.md #5).

Every section renders its own Markdown fragment (paper and ours side by side); this module joins
them, and turns the Markdown into a standalone HTML page with the ``markdown`` library.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import markdown

from intriguing import records

CSS = """
body { font-family: system-ui, sans-serif; max-width: 70rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
"""

TITLE = "Intriguing properties of neural networks: reproduction report"


def markdown_document(document: dict[str, Any], sections: Sequence[Any], ctx: Any) -> str:
    """The whole report as Markdown: a header, then each section's own fragment."""
    env = document.get("environment", {})
    parts = [
        f"# {TITLE}",
        f"Szegedy et al., ICLR 2014 (arXiv:1312.6199). Preset `{document['preset']}`; "
        f"intriguing {env.get('intriguing', '?')}, torch {env.get('torch', '?')}.",
    ]
    for section in sections:
        parts.append(f"## {section.title}")
        parts.append(section.render(document[section.key], ctx))
    return "\n\n".join(parts) + "\n"


def to_html(text: str, title: str = TITLE) -> str:
    body = markdown.markdown(text, extensions=["tables", "fenced_code"], output_format="html")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


def write(document: dict[str, Any], sections: Sequence[Any], ctx: Any) -> None:
    """Write ``report.md`` and ``report.html`` into ``ctx.out`` (atomically)."""
    text = markdown_document(document, sections, ctx)
    records.write_bytes(ctx.out / "report.md", text.encode())
    records.write_bytes(ctx.out / "report.html", to_html(text).encode())

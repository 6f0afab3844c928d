"""The standalone HTML page: the Markdown report with every figure embedded, so it can be mailed alone."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import markdown

from intriguing.report.markdown import TITLE

CSS = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.5rem; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
code { background: #f4f4f4; padding: 0 0.2rem; }
blockquote { border-left: 0.3rem solid #c60; background: #fff6ec; margin: 1rem 0; padding: 0.5rem 1rem; }
td:nth-child(n+2) { white-space: normal; }
"""

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



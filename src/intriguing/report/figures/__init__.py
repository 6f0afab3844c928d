"""The report's figures: the only place matplotlib is imported.

Each topic has its module (``transfer``, ``units``, ...) with functions that take the library's
records or tensors and write a PNG. :func:`pyplot` loads matplotlib on the file-only Agg backend,
late, so that importing the report costs nothing until a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

DPI = 110


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (its folder created) and free it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not fig.get_layout_engine():
        fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)
    return path

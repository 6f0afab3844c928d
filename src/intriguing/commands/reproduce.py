"""``intriguing reproduce``: every section of the paper in one resumable run, with the report."""

from __future__ import annotations

import time

import click

from intriguing import reproduce
from intriguing.commands.options import data_dir_option


@click.command("reproduce")
@click.option("--preset", type=click.Choice(reproduce.PRESETS), default="default", show_default=True,
              help="smoke: tiny, under a minute; default: >= 1,000 attacked examples per model, minutes; "
                   "full: the paper's scale, hours.")
@click.option("--out", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Output folder (default: runs/<preset>); a rerun resumes what it finds there.")
@click.option("--only", "only", multiple=True, metavar="SECTION",
              help="Run only this section (and those it needs); repeat or separate with commas, "
                   "e.g. --only table1,table2.")
@data_dir_option
@click.option("--cache", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Checkpoint cache folder (default: $INTRIGUING_CACHE or ~/.cache/intriguing).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show the progress line.")
def command(preset: str, out: str | None, only: tuple[str, ...], data_dir: str | None, cache: str | None,
            progress: bool) -> None:
    """Reproduce the paper's results: results.json, report.md, report.html and figures/ in the output folder."""
    start = time.perf_counter()
    sections = [key.strip() for item in only for key in item.split(",") if key.strip()]
    document = reproduce.run(preset, out, only=sections or None, data_dir=data_dir, cache=cache, progress=progress)
    folder = out if out is not None else reproduce.default_out(preset)
    held = sum(claim["holds"] is True for claim in document["claims"])
    click.echo(
        f"{len(document['sections'])} sections in {folder}/ (report.html, report.md, results.json); "
        f"{held} of {len(document['claims'])} claims of the paper hold [{time.perf_counter() - start:.1f}s]"
    )

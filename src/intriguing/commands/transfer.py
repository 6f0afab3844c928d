"""``intriguing transfer MODEL MODEL ...``: Table 2 of the paper for any set of models on the same data.

Section 4.2: each model's adversarial examples are fed to every other model; Gaussian noise of the
paper's sizes (stddev 0.1 and 0.3) is the control row. Library: :func:`intriguing.transfer.cross_model_table`.
"""

from __future__ import annotations

import math
from pathlib import Path

import click

from intriguing import records
from intriguing.commands.inputs import load_data
from intriguing.commands.options import (
    OutputPath,
    data_dir_option, data_option, model_options, on_option, seed_option, split_option,
)
from intriguing.errors import IntriguingError
from intriguing.models import LoadedModel, resolve_model
from intriguing.transfer import TransferTable, cross_model_table

PAPER_STDDEVS = "0.1,0.3"  # Table 2's Gaussian-noise rows


def _weights_per_model(models: tuple[str, ...], weights: tuple[str, ...]) -> list[str | None]:
    if weights and len(weights) != len(models):
        raise IntriguingError(f"--weights: give it once per model ({len(models)}, in their order; 'none' for a "
                              f"model without), or not at all; got {len(weights)}")
    return [None if w in (None, "none") else w for w in (weights or [None] * len(models))]


def _column_names(models: tuple[str, ...], weights: list[str | None]) -> list[str]:
    """The models' names in the table: the spec, with the weights file when that tells them apart."""
    names = [m if w is None else f"{m} [{Path(w).name}]" for m, w in zip(models, weights)]
    if len(set(names)) < len(names):
        names = [f"{i + 1}: {name}" for i, name in enumerate(names)]
    return names


def _load(models, weights, options: dict, seed: int, on: str, data_dir: str | None) -> dict[str, LoadedModel]:
    names = _column_names(models, weights)
    loaded = {name: resolve_model(spec, **{**options, "weights": w}, seed=seed, on=on, data_dir=data_dir)
              for name, spec, w in zip(names, models, weights)}
    for what, of in (("have the same classes", lambda m: m.num_classes),
                     ("take images of the same channels", lambda m: m.input_shape[0])):
        counts = {name: of(m) for name, m in loaded.items()}
        if len(set(counts.values())) > 1:
            raise IntriguingError(f"models: every model must {what} to share adversarial examples; got {counts}")
    return loaded


def format_table(table: TransferTable) -> list[str]:
    """Rows of perturbed images, columns of models: error in %, and the rows' mean RMS distortion."""
    width = max(len(row) for row in table.rows)
    lines = [f"{'':<{width}}  " + "  ".join(f"{c:>12.12}" for c in table.columns) + "  distortion"]
    for row, cells in table.rows.items():
        errors = "  ".join(f"{100 * cells[c].value:>11.1f}%" for c in table.columns)
        lines.append(f"{row:<{width}}  {errors}  {table.distortion[row].value:.4f}")
    return lines


def _stddevs(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise IntriguingError(f"--gaussian: expected stddevs separated by commas, e.g. {PAPER_STDDEVS}; got {text!r}")
    if not all(0 <= v < math.inf for v in values):  # NaN fails this too
        raise IntriguingError(f"--gaussian: stddevs must be finite and >= 0, got {text!r}")
    return values


@click.command("transfer")
@click.argument("models", nargs=-1, required=True)
@model_options(several=True)
@click.option("--n", "n", type=click.IntRange(min=1), default=100, show_default=True,
              help="The first N examples of the data (every model's cells are on the same images).")
@click.option("--gaussian", default=PAPER_STDDEVS, show_default=True,
              help="Stddevs of the Gaussian-noise control rows (comma-separated; empty for none).")
@click.option("--out", type=OutputPath(dir_okay=False, path_type=str), default=None,
              help="Write the table, with intervals and settings, to this JSON file.")
@data_option
@split_option
@on_option
@seed_option
@data_dir_option
def command(models: tuple[str, ...], model_options: dict, n: int, gaussian: str, out: str | None,
            data: str | None, fit: str, split: str, on: str, seed: int, data_dir: str | None) -> None:
    """Table 2 for MODELS: the error of every model (column) on every model's adversarial examples and
    on Gaussian noise (rows), against the true labels, on the same N examples."""
    if out:
        records.check_writable(Path(out).parent, "--out")
    stddevs = _stddevs(gaussian)
    weights = _weights_per_model(models, model_options["weights"])
    loaded = _load(models, weights, model_options, seed, on, data_dir)
    first = next(iter(loaded.values()))
    dataset = load_data(first, data, split=split, data_dir=data_dir, limit=n, fit=fit)
    table = cross_model_table({name: m.model for name, m in loaded.items()}, dataset.images, dataset.labels,
                              seed=seed, gaussian=stddevs)
    click.echo(f"Error rates (%) of each column's model on each row's images ({table.n} examples of "
               f"{dataset.source}):")
    for line in format_table(table):
        click.echo(line)
    if out:
        settings = {"models": list(models), "weights": weights, "n": n, "gaussian": stddevs, "seed": seed,
                    "data": data or f"MNIST {split}", "on": on}
        records.write_json(out, {"settings": settings, "table": table, "environment": records.environment()})
        click.echo(f"wrote {out}")

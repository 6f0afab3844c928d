"""``intriguing units MODEL --layer NAME``: single units versus random directions (Section 3, Figs 1-2)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch
from torch import nn

from intriguing import records, units, zoo
from intriguing.commands.inputs import load_data
from intriguing.commands.options import OutputPath, data_dir_option, data_option, model_options, seed_option
from intriguing.errors import IntriguingError
from intriguing.models import resolve_model
from intriguing.records import check_writable
from intriguing.report.figures.units import save_grid, save_purity_distributions


def write_study(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor, out: str | Path, *,
                model_name: str = "model", k: int = 8, directions: int = 200, seed: int = 0,
                resamples: int = 2000) -> units.UnitStudy:
    """:func:`intriguing.units.study_model`, written into ``out``: ``units.json`` (config, study and
    per-direction metrics) and the figures ``grid.png`` (like the paper's Figs 1-2) and ``purity.png``."""
    analysis, study = units.study_model(model, layer, images, labels, model_name=model_name, k=k,
                                        directions=directions, seed=seed, resamples=resamples)
    out = Path(out)
    grid = save_grid(out / "grid.png", images, labels, analysis, title=f"{model_name} / {layer}")
    distributions = save_purity_distributions(out / "purity.png", [study])
    records.write_json(out / "units.json", {
        "config": {"model": model_name, "layer": layer, "k": k, "directions": directions, "seed": seed,
                   "resamples": resamples, "images": len(images)},
        "study": study,
        "analysis": analysis,
        "figures": [grid.name, distributions.name],
        "environment": records.environment(),
    })
    return study


def format_study(study: units.UnitStudy) -> list[str]:
    """A few lines for a terminal: the units' means, then units versus each family on purity."""
    found = study.families[0]
    lines = [
        f"{study.model} / {study.layer} ({study.variant}, seeds {study.seeds}, k={study.k}): "
        f"{found.directions} units ({found.constant} constant, left out), "
        f"2x{study.directions} directions per law",
        "  units: " + ", ".join(f"{m} {found.means[m]:.3f}" for m in units.METRICS),
    ]
    for c in study.comparisons:
        if c.metric == "purity":
            lines.append(
                f"  vs {c.family:<13} purity {c.family_mean:.3f}: difference {c.difference:+.3f} "
                f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], p={c.p_value:.4f} -> {c.verdict}"
            )
    return lines


@click.command("units")
@click.argument("model")
@model_options()
@click.option("--layer", default=None,
              help="Module name in the model (e.g. 'h1' or 'features'); a missing or wrong name lists the valid ones.")
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="Top images per direction.")
@click.option("--directions", type=click.IntRange(min=1), default=200, show_default=True,
              help="Random directions drawn per law (each is also used with the opposite sign).")
@seed_option
@click.option("--out", type=OutputPath(file_okay=False, path_type=Path), default=None,
              help="Output folder  [default: runs/units/MODEL-LAYER-sSEED]")
@data_option
@data_dir_option
def command(model: str, model_options: dict, layer: str, k: int, directions: int, seed: int, out: Path | None,
            data: str | None, fit: str, data_dir: str | None) -> None:
    """Do single units of MODEL (a zoo name trained with --seed, or your own) look more coherent than random
    directions?

    Ranks the images (--data, default the MNIST test images) by every unit of layer --layer and by random
    directions of several laws, scores each direction's top-k by label purity, label entropy and class
    selectivity, and writes units.json, grid.png (like the paper's Figs 1-2) and purity.png into --out.
    """
    start = time.perf_counter()
    if out is not None:
        check_writable(out, "--out folder")
    if model in zoo.names():
        _check_layer(zoo.build(model), layer)  # a wrong layer name fails now, not after training
    loaded = resolve_model(model, **model_options, seed=seed, data_dir=data_dir)
    _check_layer(loaded.network, layer)  # the error lists the network's own layer names
    dataset = load_data(loaded, data, split="test", data_dir=data_dir, fit=fit)
    name = Path(model).name
    out = out or Path("runs") / "units" / f"{units.slug(name, layer)}-s{seed}"
    study = write_study(loaded.model, f"network.{layer}", dataset.images, dataset.labels, out, model_name=name,
                        k=k, directions=directions, seed=seed)
    for line in format_study(study):
        click.echo(line)
    click.echo(f"wrote {out / 'units.json'}, {out / 'grid.png'}, {out / 'purity.png'} "
               f"[{time.perf_counter() - start:.1f}s]")


def _check_layer(network: nn.Module, layer: str | None) -> None:
    """Fail in one line, listing ``network``'s layers, when ``layer`` is missing or not one of them."""
    if layer is None:
        names = [name for name, _ in network.named_modules() if name]
        raise IntriguingError(f"which layer? give --layer NAME, one of the model's layers: {', '.join(names)}")
    units.find_layer(network, layer)

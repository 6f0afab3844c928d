"""``intriguing units MODEL --layer NAME``: single units versus random directions (Section 3, Figs 1-2)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from intriguing import data, units, zoo
from intriguing.commands.options import data_dir_option, seed_option


@click.command("units")
@click.argument("model")
@click.option("--layer", required=True,
              help="Module name in the model (e.g. 'h1' or 'features'); a wrong name lists the valid ones.")
@click.option("--k", type=click.IntRange(min=1), default=8, show_default=True, help="Top images per direction.")
@click.option("--directions", type=click.IntRange(min=1), default=200, show_default=True,
              help="Random directions drawn per law (each is also used with the opposite sign).")
@seed_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder  [default: runs/units/MODEL-LAYER-sSEED]")
@data_dir_option
def command(model: str, layer: str, k: int, directions: int, seed: int, out: Path | None, data_dir: str | None) -> None:
    """Do single units of zoo model MODEL (trained with --seed) look more coherent than random directions?

    Ranks the MNIST test images by every unit of layer --layer and by random directions of several
    laws, scores each direction's top-k by label purity, label entropy and class selectivity, and
    writes units.json, grid.png (like the paper's Figs 1-2) and purity.png into --out.
    """
    start = time.perf_counter()
    units.find_layer(zoo.build(model), layer)  # a wrong layer name fails now, not after training
    network = zoo.trained(model, seed=seed, data_dir=data_dir)
    images, labels = data.load_mnist("test", data_dir)
    out = out or Path("runs") / "units" / f"{units.slug(model, layer)}-s{seed}"
    study = units.study_model(network, layer, images, labels, out, model_name=model, k=k,
                              directions=directions, seed=seed)
    for line in units.format_study(study):
        click.echo(line)
    click.echo(f"wrote {out / 'units.json'}, {out / 'grid.png'}, {out / 'purity.png'} "
               f"[{time.perf_counter() - start:.1f}s]")

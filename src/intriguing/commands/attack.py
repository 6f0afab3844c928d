"""``intriguing attack MODEL``: minimal adversarial examples for a zoo model (Section 4.1)."""

from __future__ import annotations

import time

import click
import torch

from intriguing import data, records, zoo
from intriguing.architectures import NUM_CLASSES
from intriguing.attacks import LBFGS, LBFGSConfig, Targeted, Untargeted
from intriguing.commands.options import data_dir_option, on_option, seed_option
from intriguing.errors import IntriguingError
from intriguing.seeding import random_targets

TARGET_MODES = ("random", "next", "untargeted")


@click.command("attack")
@click.argument("name")
@click.option("--n", "n", type=int, default=100, show_default=True,
              help="Attack the first N examples of the split that the model classifies correctly.")
@click.option("--split", type=click.Choice(list(data.SPLITS)), default="test", show_default=True,
              help="Split the examples come from.")
@click.option("--target", "mode", type=click.Choice(TARGET_MODES), default="random", show_default=True,
              help="random: a seeded random other class; next: label + 1 (mod 10); untargeted: any other class.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the summary, per-example results and config to this JSON file.")
@click.option("--no-refine", is_flag=True, help="Report the paper-faithful c search only (no refinement).")
@click.option("--batch-size", type=int, default=512, show_default=True, help="Examples solved together.")
@on_option
@seed_option
@data_dir_option
def command(name: str, n: int, split: str, mode: str, out: str | None, no_refine: bool, batch_size: int,
            on: str, seed: int, data_dir: str | None) -> None:
    """Attack zoo model NAME (trained on --on with --seed) with the batched box-constrained L-BFGS attack."""
    if n < 1:
        raise IntriguingError(f"--n: expected at least 1 example, got {n}")
    model = zoo.trained(name, on=on, seed=seed, data_dir=data_dir).model
    images, labels = data.load_mnist(split, data_dir)
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).nonzero().squeeze(1)[:n]
    x, y = images[correct], labels[correct]
    attack = LBFGS(LBFGSConfig.refined(refine=not no_refine, batch_size=batch_size), progress=True)
    start = time.perf_counter()
    if mode == "untargeted":
        result = attack(model, x, Untargeted(y))
    else:
        target = random_targets(y, NUM_CLASSES, seed=seed) if mode == "random" else (y + 1) % NUM_CLASSES
        result = attack(model, x, Targeted(target))
    seconds = time.perf_counter() - start
    summary = result.summary()
    click.echo(
        f"{name}: {mode} attack on {len(x)} correctly classified {split} examples in {seconds:.1f}s: "
        f"success {100 * summary['success_rate']:.1f}%, distortion mean {summary['mean_distortion']:.4f} / "
        f"median {summary['median_distortion']:.4f} (paper-faithful: {summary['mean_distortion_paper']:.4f} / "
        f"{summary['median_distortion_paper']:.4f})"
    )
    if out:
        records.write_json(out, {
            "model": name, "on": on, "seed": seed, "split": split, "target": mode, "seconds": seconds,
            "indices": correct, "labels": y, "summary": summary, "per_example": result.per_example(),
            "config": result.config, "environment": records.environment(),
        })
        click.echo(f"wrote {out}")

"""``intriguing exact MODEL``: exact minimal distortions of a small ReLU zoo model, beside the attack (Section 4.1)."""

from __future__ import annotations

import click
import torch

from intriguing import data, records, zoo
from intriguing.commands.options import OutputPath, data_dir_option, on_option, seed_option, split_option
from intriguing.errors import IntriguingError
from intriguing.oracles.compare import compare_with_attack
from intriguing.seeding import random_targets


@click.command("exact")
@click.argument("name")
@click.option("--n", "n", type=int, default=20, show_default=True,
              help="Solve the first N examples of the split that the model classifies correctly.")
@split_option
@click.option("--time-limit", type=float, default=60.0, show_default=True, help="Seconds per exact problem.")
@click.option("--solver", type=click.Choice(["bnb", "scip"]), default="bnb", show_default=True,
              help="bnb: branch and bound with exact QP bounds (fast); scip: the big-M MIQP in SCIP.")
@click.option("--out", type=OutputPath(dir_okay=False, path_type=str), default=None,
              help="Write the per-example results and config to this JSON file.")
@on_option
@seed_option
@data_dir_option
def command(name: str, n: int, split: str, time_limit: float, solver: str, out: str | None, on: str, seed: int,
            data_dir: str | None) -> None:
    """Exact minimal targeted L2 distortion for zoo model NAME (a ReLU MLP), with the certified lower
    bound and the L-BFGS attack's (refined and paper-faithful) distortions for comparison."""
    if n < 1:
        raise IntriguingError(f"--n: expected at least 1 example, got {n}")
    if time_limit <= 0:
        raise IntriguingError(f"--time-limit: expected a positive number of seconds, got {time_limit}")
    model = zoo.trained(name, on=on, seed=seed, data_dir=data_dir).model
    images, labels = data.load_mnist(split, data_dir)
    with torch.no_grad():
        logits = model(images)
    correct = (logits.argmax(1) == labels).nonzero().squeeze(1)[:n]
    x, y = images[correct], labels[correct]
    target = random_targets(y, logits.shape[1], seed)
    out_ = compare_with_attack(model, x, target, time_limit=time_limit, solver=solver)
    rows, summary = out_["rows"], out_["summary"]
    for row in rows:
        click.echo(f"#{row['index']:3d} exact {row['exact']:.5f} [{row['exact_lower']:.5f}] {row['status']:9s} "
                   f"refined/exact {row['refined_ratio']:.4f} paper/exact {row['paper_ratio']:.4f} "
                   f"certified/exact {row['certified_ratio']:.3f} {row['seconds']:.1f}s")
    click.echo(f"{name}: {summary['solved']}/{len(rows)} solved (gap <= 1e-4); median ratio refined/exact "
               f"{_fmt(summary['median_refined_ratio'])} (worst {_fmt(summary['worst_refined_ratio'])}), paper/exact "
               f"{_fmt(summary['median_paper_ratio'])}, certified/exact {_fmt(summary['median_certified_ratio'])}; "
               f"certified <= exact <= found: {summary['ordered']}")
    if out:
        records.write_json(out, {
            "model": name, "on": on, "seed": seed, "split": split, "indices": correct, "labels": y,
            "targets": target, "time_limit": time_limit, "solver": solver, "summary": summary, "per_example": rows,
            "attack_config": out_["attack_config"], "environment": records.environment(),
        })
        click.echo(f"wrote {out}")


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

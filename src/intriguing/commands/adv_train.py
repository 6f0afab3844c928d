"""``intriguing adv-train MODEL``: adversarial training with refreshed per-layer pools (Section 4.1)."""

from __future__ import annotations

import dataclasses
import time

import click

from intriguing import advtrain, records
from intriguing.commands.options import OutputPath, data_dir_option

DEFAULTS = advtrain.AdvTrainStudyConfig()
POOL = DEFAULTS.training


def _layers(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    layers = tuple(part.strip() for part in value.split(",") if part.strip())
    if not layers:
        raise click.BadParameter("name at least one layer, e.g. 'input' or 'input,h1,h2'")
    return layers


@click.command("adv-train")
@click.argument("model")
@click.option("--layers", default=",".join(DEFAULTS.layers), show_default=True, callback=_layers,
              help="Comma-separated layers to keep a pool for: 'input' and/or hidden layers (h1, h2).")
@click.option("--seeds", type=click.IntRange(min=1), default=len(DEFAULTS.seeds), show_default=True,
              help="Train every variant with seeds 0 .. N-1.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (default: the model's recipe).")
@click.option("--warmup-epochs", type=click.IntRange(min=0), default=POOL.warmup_epochs, show_default=True,
              help="Epochs of plain training before the pools are filled.")
@click.option("--pool-size", type=click.IntRange(min=1), default=POOL.pool_size, show_default=True,
              help="Adversarial examples kept per layer.")
@click.option("--refresh-every", type=click.IntRange(min=1), default=POOL.refresh_every, show_default=True,
              help="Training steps between pool refreshes.")
@click.option("--refresh-fraction", type=click.FloatRange(0, 1, min_open=True), default=POOL.refresh_fraction,
              show_default=True, help="Fraction of each pool replaced by fresh adversarial examples per refresh.")
@click.option("--pool-batch", type=click.IntRange(min=1), default=POOL.pool_batch, show_default=True,
              help="Pool examples added to every minibatch.")
@click.option("--target", type=click.Choice(advtrain.TARGETS), default=POOL.target, show_default=True,
              help="Aim of the pool's adversarial examples: a random other class, or the closest one.")
@click.option("--dropout", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=DEFAULTS.dropout,
              show_default=True, help="Dropout rate of the dropout baseline.")
@click.option("--baselines/--no-baselines", default=DEFAULTS.baselines, show_default=True,
              help="Also train the weight-decay-only and dropout baselines in the same harness.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Train on the first N training images only (default: all 60,000).")
@click.option("--eval-examples", type=click.IntRange(min=1), default=DEFAULTS.eval_examples, show_default=True,
              help="Test images whose average minimum distortion measures robustness.")
@click.option("--out", type=OutputPath(dir_okay=False, path_type=str), default=None,
              help="Write the full record (config, every run, summary) to this JSON file.")
@data_dir_option
def command(model: str, layers: tuple[str, ...], seeds: int, epochs: int | None, warmup_epochs: int,
            pool_size: int, refresh_every: int, refresh_fraction: float, pool_batch: int, target: str,
            dropout: float, baselines: bool, limit: int | None, eval_examples: int, out: str | None,
            data_dir: str | None) -> None:
    """Adversarially train zoo MODEL (e.g. 'FC100-100-10') with pools at --layers, beside the baselines.

    Prints each variant's test error (mean ± std over the seeds) and average minimum distortion.
    """
    pool = dataclasses.replace(POOL, warmup_epochs=warmup_epochs, pool_size=pool_size,
                               refresh_every=refresh_every, refresh_fraction=refresh_fraction,
                               pool_batch=pool_batch, target=target)
    config = dataclasses.replace(DEFAULTS, model=model, seeds=tuple(range(seeds)), layers=layers, dropout=dropout,
                                 baselines=baselines, limit=limit, eval_examples=eval_examples,
                                 recipe={"epochs": epochs} if epochs else {}, training=pool)
    start = time.perf_counter()
    study = advtrain.run_experiment(config, data_dir=data_dir)
    for s in study.summary:
        std = f" ± {100 * s.test_error_std:.2f}%" if s.test_error_std is not None else ""
        click.echo(f"{s.variant:<28} test error {100 * s.test_error_mean:.2f}%{std}   "
                   f"av. min. distortion {s.distortion_mean:.4f}   {s.seconds_mean:.0f} s/run")
    if out:
        records.write_json(out, study)
        click.echo(f"wrote {out}")
    click.echo(f"[{time.perf_counter() - start:.0f} s]")

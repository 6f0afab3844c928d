"""``intriguing train NAME``: train a zoo model (or load it from the cache) and print its errors."""

from __future__ import annotations

import time

import click

from intriguing import zoo
from intriguing.commands.options import data_dir_option, on_option, seed_option


@click.command("train")
@click.argument("name")
@on_option
@seed_option
@data_dir_option
def command(name: str, on: str, seed: int, data_dir: str | None) -> None:
    """Train zoo model NAME and print its errors; a cached checkpoint is loaded instead when present.

    NAME is one of the zoo's models, e.g. FC100-100-10 (`intriguing models` lists them).
    """
    start = time.perf_counter()
    result = zoo.trained(name, on=on, seed=seed, data_dir=data_dir).record
    click.echo(
        f"{name} on {on} (seed {seed}): train error {100 * result.train_error:.2f}%, "
        f"test error {100 * result.test_error:.2f}% [{time.perf_counter() - start:.1f}s; "
        f"trained in {result.seconds:.1f}s]"
    )

"""Options shared by several subcommands, defined once."""

from __future__ import annotations

import click

from intriguing import data

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=str),
    envvar=data.DATA_DIR_ENV,
    default=None,
    help=f"Folder with the four MNIST-layout IDX files (default: bundled MNIST; env {data.DATA_DIR_ENV}).",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
on_option = click.option(
    "--on", "on", type=click.Choice(list(data.SPLITS)), default="train", show_default=True,
    help="Training split: the full set, or the paper's disjoint halves P1 / P2.",
)

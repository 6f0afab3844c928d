"""Options shared by several subcommands, defined once."""

from __future__ import annotations

import click
from click.core import ParameterSource

from intriguing import data

# Key in ``click.Context.meta`` (shared by the group and its subcommand): what to tell a user whose
# run was interrupted, set by a subcommand that can say more than the generic message.
ON_INTERRUPT = "intriguing.on_interrupt"


def _check_data_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check the folder while its origin is known: a wrong ``--data-dir`` is fixed by changing the
    flag, a wrong ``$INTRIGUING_DATA_DIR`` by unsetting the variable, and the advice must say which."""
    if value is None:
        return None
    from_env = ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
    data.check_data_dir(value, data.DATA_DIR_ENV if from_env else "--data-dir")
    return value


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(path_type=str),
    envvar=data.DATA_DIR_ENV,
    default=None,
    callback=_check_data_dir,
    help=f"Folder with the four MNIST-layout IDX files (default: bundled MNIST; env {data.DATA_DIR_ENV}).",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
on_option = click.option(
    "--on", "on", type=click.Choice(list(data.SPLITS)), default="train", show_default=True,
    help="Training split: the full set, or the paper's disjoint halves P1 / P2.",
)

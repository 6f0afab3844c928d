"""The ``intriguing`` command line: a thin layer over the library (STYLE.md #9).

Each subcommand lives in ``intriguing.commands.<name>`` as a click command calling one public
function. User errors (:class:`~intriguing.errors.IntriguingError`) print one line, not a traceback.
"""

from __future__ import annotations

import importlib
import sys

import click
import torch

from intriguing import __version__
from intriguing.errors import IntriguingError

# Subcommand modules under intriguing.commands, in the order --help lists them.
COMMANDS = ("train", "attack", "adv_train", "reproduce", "units", "lipschitz")


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except IntriguingError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="intriguing")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, envvar="INTRIGUING_THREADS",
              help="Torch intra-op threads (env INTRIGUING_THREADS). The toolkit's tensors are small: one thread "
                   "is usually fastest, and a second one waiting for a busy core slows every operation.")
def main(threads: int) -> None:
    """Reproduce and extend Szegedy et al. 2014, "Intriguing properties of neural networks"."""
    torch.set_num_threads(threads)


for _name in COMMANDS:
    main.add_command(importlib.import_module(f"intriguing.commands.{_name}").command)

"""The ``intriguing`` command line: a thin layer over the library.

Each subcommand lives in ``intriguing.commands.<name>`` as a click command calling one public
function. User errors (:class:`~intriguing.errors.IntriguingError`) print one line, not a traceback;
so do Ctrl-C and SIGTERM, with what the interruption left behind and how to go on.
"""

from __future__ import annotations

import contextlib
import importlib
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterator

import click
import torch

from intriguing import __version__
from intriguing.commands.options import ON_INTERRUPT
from intriguing.errors import IntriguingError
from intriguing.numerics import flush_subnormals

# Subcommand modules under intriguing.commands, in the order --help lists them.
COMMANDS = ("train", "attack", "transfer", "adv_train", "reproduce", "units", "lipschitz", "exact", "models")
# Exit statuses of a run stopped by a signal, as shells report them (128 + signal number).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143
# More torch threads than this crashed the interpreter (99,999: a segmentation fault); none is useful here.
MAX_THREADS = 1024
DEFAULT_ON_INTERRUPT = ("every file written so far is whole (files are written atomically); "
                        "rerun the same command to start again")


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. ``kill``, a batch system's time limit), raised like Ctrl-C so the same cleanup runs."""


# Set when SIGTERM arrives: a library may catch our Terminated and raise a plain KeyboardInterrupt of
# its own (Ray's ray.wait does), and the user must still be told which signal ended the run.
_terminated = threading.Event()


def _raise_terminated(signum: int, frame: object) -> None:
    _terminated.set()
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while a command runs (Python's default would kill the
    process at once, skipping the clean-up of temporary files), then restore the old handler."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _terminated.clear()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show each warning while a command runs as ``warning: message``, one line on stderr: Python's format
    adds the file, line and source of the ``warnings.warn`` call, which tells a user nothing."""
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_args, **_kwargs: click.echo(f"warning: {message}", err=True)
        yield


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            with _sigterm_as_interrupt(), _one_line_warnings():
                return super().invoke(ctx)
        except IntriguingError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except (MemoryError, torch.OutOfMemoryError) as e:  # a count too large for this machine
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            click.echo(f"error: out of memory ({reason}); ask for less at once: fewer examples, directions or "
                       "images, or a smaller --batch-size", err=True)
            sys.exit(2)
        except KeyboardInterrupt as e:
            terminated = isinstance(e, Terminated) or _terminated.is_set()
            what = "SIGTERM" if terminated else "Ctrl-C"
            click.echo(f"interrupted by {what}: {ctx.meta.get(ON_INTERRUPT, DEFAULT_ON_INTERRUPT)}", err=True)
            sys.exit(EXIT_SIGTERM if terminated else EXIT_SIGINT)
        except click.NoSuchOption as e:
            _hint_global_option(self, ctx, e)
            raise

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["intriguing.args"] = list(args)  # the command line as typed, for the hint below
        return super().parse_args(ctx, args)


def _hint_global_option(group: click.Group, ctx: click.Context, error: click.NoSuchOption) -> None:
    """A group option (``--threads``) given after the subcommand: say it goes before, with the fixed line."""
    name = error.option_name.split("=", 1)[0]
    option = next((p for p in group.params if name in p.opts), None)
    if option is None:
        return
    moved = _moved(ctx.meta.get("intriguing.args", []), name, takes_value=not getattr(option, "is_flag", False))
    example = f"intriguing {shlex.join(moved)}" if moved else f"intriguing {name} ... COMMAND ..."
    error.possibilities = None  # click would add "did you mean" for a subcommand option
    error.message = (f"No such option for this command: {name}. It is a global option and goes before "
                     f"the command: {example}")


def _moved(args: list[str], name: str, takes_value: bool) -> list[str] | None:
    """``args`` with option ``name`` (and its value) moved to the front; None when it cannot be found."""
    for i, arg in enumerate(args):
        end = i + 1 + takes_value
        if arg == name and end <= len(args):
            return [*args[i:end], *args[:i], *args[end:]]
        if arg.startswith(name + "="):
            return [arg, *args[:i], *args[i + 1 :]]
    return None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="intriguing")
@click.option("--threads", type=click.IntRange(min=1, max=MAX_THREADS), default=1, show_default=True,
              envvar="INTRIGUING_THREADS",
              help="Torch intra-op threads (env INTRIGUING_THREADS). The toolkit's tensors are small: one thread "
                   "is usually fastest, and a second one waiting for a busy core slows every operation.")
def main(threads: int) -> None:
    """Reproduce and extend Szegedy et al. 2014, "Intriguing properties of neural networks"."""
    torch.set_num_threads(threads)
    flush_subnormals()


for _name in COMMANDS:
    main.add_command(importlib.import_module(f"intriguing.commands.{_name}").command)

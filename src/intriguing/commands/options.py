"""Options shared by several subcommands, defined once."""

from __future__ import annotations

import functools

import click
from click.core import ParameterSource

from intriguing import data, pixels

# Key in ``click.Context.meta`` (shared by the group and its subcommand): what to tell a user whose
# run was interrupted, set by a subcommand that can say more than the generic message.
ON_INTERRUPT = "intriguing.on_interrupt"


class OutputPath(click.Path):
    """A file or folder to write: ``click.Path`` that refuses the empty string, which it would turn into the
    current folder (a run's report written there) or, for a file, quietly into no file at all."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value.strip():
            self.fail("an empty path; give a file or folder name", param, ctx)
        return super().convert(value, param, ctx)


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


# --- your own model and images (one way to name a model: intriguing.models.resolve_model) -----------

MODEL_KEYS = ("weights", "mean", "std", "size", "classes", "device")


def _numbers(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """``0.485,0.456,0.406`` (one number per channel, or one for all) as floats."""
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(
            f"expected numbers separated by commas, e.g. 0.485,0.456,0.406; got {value!r}"
        ) from None


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | tuple[int, int] | None:
    """``224`` or ``HxW`` (e.g. ``32x48``) as the network's input size."""
    if value is None:
        return None
    parts = value.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"expected a positive size such as 224 or HxW such as 32x48, got {value!r}")
    return int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))


device_option = click.option(
    "--device", default="cpu", show_default=True, metavar="cpu|cuda[:N]|mps|auto",
    help="cpu, cuda (or cuda:N), mps, or auto (the best available); a missing device is an error.",
)


def model_options(several: bool = False):
    """``--weights --mean --std --size --classes --device``, handed to the command as one dict
    ``model_options`` of :func:`intriguing.models.resolve_model`'s keywords. With ``several`` (commands
    taking several models) ``--weights`` is given once per model, in their order (``none`` for none)."""
    weights_help = ("Weights for each MODEL in order (.safetensors, or a .pt/.pth state dict; 'none' for a "
                    "zoo model's own)" if several else
                    "Weights: .safetensors, or a .pt/.pth state dict (read with torch.load(weights_only=True)).")
    options = [
        click.option("--weights", multiple=several, default=() if several else None, metavar="PATH",
                     help=weights_help),
        click.option("--mean", callback=_numbers, default=None, metavar="M[,M,M]",
                     help="Per-channel mean the network expects, for pixels in [0, 1], e.g. 0.485,0.456,0.406."),
        click.option("--std", callback=_numbers, default=None, metavar="S[,S,S]",
                     help="Per-channel std, e.g. 0.229,0.224,0.225."),
        click.option("--size", callback=_size, default=None, metavar="N|HxW",
                     help="The network's input size (224 or HxW); images are resized to it, inside the model."),
        click.option("--classes", type=click.Path(dir_okay=False, exists=True, path_type=str), default=None,
                     help="Class names, one per line (default: ImageNet's for 1000 classes, else the indices)."),
        device_option,
    ]

    def decorate(command):
        @functools.wraps(command)
        def bundled(*args, **kwargs):
            return command(*args, model_options={k: kwargs.pop(k) for k in MODEL_KEYS}, **kwargs)

        for option in reversed(options):
            bundled = option(bundled)
        return bundled

    return decorate


def data_option(command):
    """``--data`` and ``--fit``: the images, and how those of another shape reach the model's input size."""
    command = click.option(
        "--fit", type=click.Choice(pixels.FITS), default="crop", show_default=True,
        help="How --data images of another shape reach the model's input size: crop (the central region of "
             "its aspect ratio, resized, as ImageNet evaluation does) or squash (the whole image resized, "
             "its proportions lost).",
    )(command)
    return click.option(
        "--data", type=click.Path(exists=True, path_type=str), default=None,
        help="Images: a folder with one subfolder per class (or a labels.csv of filename,label), or a .npz of "
             "images and labels; default: MNIST (--split, --data-dir).",
    )(command)
split_option = click.option(
    "--split", type=click.Choice(list(data.SPLITS)), default="test", show_default=True,
    help="MNIST split the examples come from.",
)

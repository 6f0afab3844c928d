"""``intriguing lipschitz MODEL|PATH``: Section 4.3's layer-wise Lipschitz bounds, next to the exact norms."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from intriguing import architectures, data, records, spectral, zoo
from intriguing.commands.options import OutputPath, data_dir_option, model_options, on_option, seed_option
from intriguing.errors import IntriguingError, unknown_name_error
from intriguing.models import BUILTINS, LoadedModel, resolve_model
from intriguing.paper.sections.table5 import layers_markdown, paper_bounds
from intriguing.records import check_writable

ALEXNET = "alexnet"
CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def resolve(model: str, arch: str | None, options: dict, on: str, seed: int,
            data_dir: str | None) -> LoadedModel:
    """The model MODEL names: any model specification (see ``intriguing models``), or a checkpoint PATH
    with --arch NAME."""
    if Path(model).suffix in CHECKPOINT_SUFFIXES and not Path(model).is_file():
        raise IntriguingError(f"{model}: no such checkpoint file; check the path, or name a model "
                              "(see `intriguing models`)")
    if Path(model).is_file() and not model.endswith(".py"):
        if arch is None:
            raise IntriguingError(f"{model}: a checkpoint needs its architecture: pass --arch NAME "
                                  f"({ALEXNET!r} or a zoo model, e.g. 'ConvNet')")
        if arch not in (*zoo.names(), *BUILTINS):
            raise unknown_name_error("architecture", arch, [*zoo.names(), *BUILTINS])
        model, options = arch, {**options, "weights": model}
    return resolve_model(model, **options, seed=seed, on=on, data_dir=data_dir)


@click.command("lipschitz")
@click.argument("model", metavar="MODEL|PATH")
@click.option("--arch", default=None, help=f"Architecture of a safetensors PATH: a zoo name or '{ALEXNET}'.")
@model_options()
@click.option("--images", type=click.IntRange(min=0), default=500, show_default=True,
              help="Test images for the gradient lower bound (MNIST-shaped models; 0 skips it).")
@click.option("--pairs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Test images to attack (L-BFGS) for the adversarial-pair lower bound (0 skips it).")
@click.option("--tol", type=float, default=1e-5, show_default=True,
              help="Relative residual at which the exact norms' Lanczos iteration stops.")
@click.option("--json", "json_path", type=OutputPath(dir_okay=False), default=None,
              help="Also save the table (settings included) as JSON.")
@on_option
@seed_option
@data_dir_option
def command(model: str, arch: str | None, model_options: dict, images: int, pairs: int, tol: float,
            json_path: str | None, on: str, seed: int, data_dir: str | None) -> None:
    """Per-layer upper Lipschitz bounds (the paper's Table 5 method) and exact norms of MODEL.

    MODEL is a zoo name (trained, or loaded from the cache), 'alexnet' (Table 5's network), your own
    file.py:factory with --weights (see `intriguing models`), or a safetensors PATH with --arch. The
    bounds are the network's, on the inputs it receives; with --std the model's bound in pixel units is
    the product divided by min(std) (the normalisation's own Lipschitz constant). For
    MNIST-shaped models the largest input-gradient norm over test images (and, with --pairs, over
    adversarial pairs) shows how far the product bound is from what the network does.
    """
    if json_path:
        check_writable(Path(json_path).parent, "--json folder")
    loaded = resolve(model, arch, model_options, on, seed, data_dir)
    network, input_shape = loaded.network, loaded.input_shape
    x = pair = None
    if pairs and input_shape == architectures.INPUT_SHAPE and loaded.num_classes != 10:
        raise IntriguingError(f"--pairs: model {model} has {loaded.num_classes} classes, but the pairs are attacks on "
                              "MNIST's 10 digits; leave --pairs out")
    if input_shape == architectures.INPUT_SHAPE and (images or pairs):
        test_images, test_labels = data.load_mnist("test", data_dir)
        x = test_images[:images] if images else None
        if pairs:
            pair = spectral.adversarial_pairs(network, test_images[:pairs], test_labels[:pairs])
            pair = pair if len(pair[0]) else None
    table = spectral.spectral_table(network, input_shape, name=model, images=x, pairs=pair, tol=tol, seed=seed,
                                    progress=True)
    document = records.to_jsonable(table)
    is_alexnet = ALEXNET in (model, arch)
    click.echo(layers_markdown(document, paper_bounds() if is_alexnet else None))
    graph = spectral.trace_graph(network, input_shape)
    if not graph.is_chain:
        merges = graph.merges()
        click.echo(f"Not a chain ({merges['sum']} sums of branches, {merges['concat']} concatenations): the "
                   "'product' is the layers' bounds composed over the graph (sums over residual branches, root "
                   "sums of squares over concatenated ones).")
    for label, value, count in (("max ||df/dx|| over test images", table.gradient_lower_bound, table.images),
                                ("max ||f(x')-f(x)||/||x'-x|| over adversarial pairs", table.pair_lower_bound,
                                 table.pairs)):
        if value is not None:
            click.echo(f"{label} ({count}): {value:.5g}")
    pixel_bound = _pixel_bound(loaded, table.product_bound)
    if pixel_bound is not None:
        click.echo(f"The model in pixel units (through --std, 1 / min(std) = {pixel_bound / table.product_bound:.5g}): "
                   f"at most **{pixel_bound:.5g}**.")
    click.echo(f"[{table.seconds:.1f}s, {torch.get_num_threads()} threads]")
    if json_path:
        settings = {"model": model, "arch": arch, "weights": model_options["weights"], "images": images,
                    "pairs": pairs, "tol": tol,
                    "on": on, "seed": seed, "data_dir": data_dir}
        records.write_json(json_path, {"settings": settings, "table": document, "pixel_bound": pixel_bound,
                                       "environment": records.environment()})


def _pixel_bound(loaded: LoadedModel, product: float) -> float | None:
    """The bound of pixels -> logits: ``x -> (x - mean) / std`` is Lipschitz with 1 / min(std) in L2 (the
    model is run at the network's own size, so no resampling), composed with the network's product
    bound. None without a --std."""
    std = loaded.model.std
    return None if std is None else product / float(std.min())

"""``intriguing attack MODEL``: minimal adversarial examples for any classifier (Section 4.1, Fig. 5)."""

from __future__ import annotations

import time
from pathlib import Path

import click
import torch

from intriguing import records
from intriguing.attacks import LBFGS, AttackResult, LBFGSConfig, Targeted, Untargeted
from intriguing.commands.inputs import correctly_classified, load_data
from intriguing.commands.options import (
    OutputPath,
    data_dir_option, data_option, model_options, on_option, seed_option, split_option,
)
from intriguing.errors import IntriguingError
from intriguing.images import ImageSet, quantized, write_npz, write_pngs
from intriguing.models import LoadedModel, resolve_model
from intriguing.report.figures.fig5 import save_fig5
from intriguing.seeding import random_targets
from intriguing.transfer import predictions

TARGET_MODES = ("random", "next", "untargeted")


def _criterion(target: str, y: torch.Tensor, loaded: LoadedModel, seed: int):
    """The success criterion for ``--target``: a seeded random class, label + 1, any other class, or
    the one class named (by name or index)."""
    k = loaded.num_classes
    if target == "untargeted":
        return Untargeted(y)
    if target == "random":
        return Targeted(random_targets(y, k, seed=seed))
    if target == "next":
        return Targeted((y + 1) % k)
    return Targeted(torch.full_like(y, loaded.class_index(target)))


def _examples(loaded: LoadedModel, dataset: ImageSet, n: int, target: str) -> torch.Tensor:
    """The first ``n`` correctly classified examples (not already of the named target class)."""
    if target not in TARGET_MODES:
        keep = dataset.labels != loaded.class_index(target)
        index = keep.nonzero().flatten()
        chosen = correctly_classified(loaded.model, ImageSet(dataset.images[index], dataset.labels[index],
                                                             dataset.class_names), n)
        return index[chosen]
    return correctly_classified(loaded.model, dataset, n)


def _file_name(i: int, original: str, reached: str) -> str:
    safe = ["".join(ch if ch.isalnum() or ch in "-." else "_" for ch in name) for name in (original, reached)]
    return f"{i:04d}-{safe[0]}-to-{safe[1]}"


def save_outputs(folder: Path, loaded: LoadedModel, x: torch.Tensor, y: torch.Tensor, result: AttackResult,
                 index: torch.Tensor, record: dict) -> dict:
    """Write the adversarial images (PNG and .npz), the Fig. 5-style grid and the JSON record into ``folder``.

    A PNG holds 8-bit pixels, so the record says how many saved images still reach their class
    after that rounding (the .npz keeps the exact floats).
    """
    names = loaded.class_names
    clean, reached = predictions(loaded.model, x), predictions(loaded.model, result.adversarial)
    stored = quantized(result.adversarial)
    still = (predictions(loaded.model, stored) == reached) & result.success
    files = [_file_name(int(i), names[int(a)], names[int(b)]) for i, a, b in zip(index, clean, reached)]
    write_pngs(folder / "adversarial", result.adversarial, files)
    write_npz(folder / "adversarial.npz", result.adversarial, y, names, original=x, index=index,
              target=result.target, success=result.success, distortion=result.distortion)
    save_fig5(folder / "fig5.png", x, result.adversarial, [names[int(c)] for c in clean],
              [names[int(c)] for c in reached], distortions=result.distortion.tolist(),
              title=f"{Path(record['model']).name}: {record['target']} attack")
    record = {**record, "png_still_adversarial": int(still.sum()), "files": [f"adversarial/{f}.png" for f in files]}
    records.write_json(folder / "attack.json", record)
    return record


@click.command("attack")
@click.argument("model")
@model_options()
@click.option("--n", "n", type=int, default=100, show_default=True,
              help="Attack the first N examples that the model classifies correctly.")
@click.option("--target", default="random", show_default=True,
              help="random (a seeded other class), next (label + 1), untargeted (any other class), or a class "
                   "name or index, e.g. ostrich or 9.")
@click.option("--out", type=OutputPath(dir_okay=False, path_type=str), default=None,
              help="Write the summary, per-example results and config to this JSON file.")
@click.option("--save", type=OutputPath(file_okay=False, path_type=Path), default=None,
              help="Folder for the adversarial images (PNG and .npz), fig5.png and attack.json.")
@click.option("--no-refine", is_flag=True,
              help="Run the paper's attack alone (LBFGSConfig.paper(): its c search, no refinement), as Tables 1-4 do.")
@click.option("--batch-size", type=int, default=512, show_default=True, help="Examples solved together.")
@data_option
@split_option
@on_option
@seed_option
@data_dir_option
def command(model: str, model_options: dict, n: int, target: str, out: str | None, save: Path | None,
            no_refine: bool, batch_size: int, data: str | None, fit: str, split: str, on: str, seed: int,
            data_dir: str | None) -> None:
    """Attack MODEL (a zoo name, 'alexnet', or file.py:factory; see `intriguing models`) with the batched
    box-constrained L-BFGS attack, in the pixel box [0, 1]."""
    if n < 1:
        raise IntriguingError(f"--n: expected at least 1 example, got {n}")
    for path, what in ((Path(out).parent if out else None, "--out"), (save, "--save")):
        if path is not None:
            records.check_writable(path, what)
    loaded = resolve_model(model, **model_options, seed=seed, on=on, data_dir=data_dir)
    dataset = load_data(loaded, data, split=split, data_dir=data_dir, fit=fit)
    index = _examples(loaded, dataset, n, target)
    if len(index) == 0:
        raise IntriguingError(f"{model}: no example of {dataset.source} is classified correctly; nothing to attack")
    if len(index) < n:
        click.echo(f"note: --n {n} asks for more examples than the {len(index)} of {dataset.source} that {model} "
                   f"classifies correctly; attacking those {len(index)}", err=True)
    x, y = dataset.images[index], dataset.labels[index]
    config = LBFGSConfig.paper if no_refine else LBFGSConfig.refined
    attack = LBFGS(config(batch_size=batch_size), progress=True)
    start = time.perf_counter()
    result = attack(loaded.model, x, _criterion(target, y, loaded, seed))
    seconds = time.perf_counter() - start
    summary = result.summary()
    click.echo(
        f"{model}: {target} attack on {len(x)} correctly classified examples of {dataset.source} in {seconds:.1f}s: "
        f"success {100 * summary['success_rate']:.1f}%, distortion mean {summary['mean_distortion']:.4f} / "
        f"median {summary['median_distortion']:.4f} (before refinement: {summary['mean_distortion_paper']:.4f} / "
        f"{summary['median_distortion_paper']:.4f})"
    )
    record = {
        "model": model, "description": loaded.description, "weights": model_options["weights"], "on": on,
        "seed": seed, "data": data or f"MNIST {split}", "split": split, "target": target, "seconds": seconds,
        "indices": index, "labels": y, "summary": summary, "per_example": result.per_example(),
        "config": result.config, "environment": records.environment(),
    }
    if out:
        records.write_json(out, record)
        click.echo(f"wrote {out}")
    if save is not None:
        saved = save_outputs(save, loaded, x, y, result, index, record)
        click.echo(f"wrote {len(saved['files'])} PNGs ({saved['png_still_adversarial']} still adversarial after "
                   f"8-bit rounding), adversarial.npz, fig5.png and attack.json to {save}")

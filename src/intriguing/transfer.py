"""How far adversarial examples carry (Szegedy et al. 2014, Section 4.2, Tables 1-4).

The paper attacks each model with box-constrained L-BFGS (Section 4.1), then feeds every model's
adversarial examples to every other model: Table 2 across architectures and regularisations,
Table 4 across training sets (models trained on the disjoint halves P1 and P2). Gaussian-noise
rows are the control, and Table 4's "amplified" rows rescale each perturbation to RMS 0.1. Both
tables have one shape - rows of perturbed versions of the same N examples, columns of models,
cells of error rates - computed by one function, :func:`transfer_table`; :func:`cross_model_table`
adds the attacks and the controls for any dict of classifiers::

    table = transfer.cross_model_table({"a": model_a, "b": model_b}, x, y)
    table.rows["a"]["b"].value      # error of model b on the adversarial examples made for a

Tables 1 and 3 list each model's errors (:func:`error_estimate`) and the mean minimum distortion of
its adversarial examples (:meth:`AdversarialSet.mean_distortion`). Every rate carries a Wilson 95%
interval and every mean a Student-t interval (:class:`intriguing.stats.Estimate`), so a report can
tell which differences from the paper matter. :func:`noise_comparison` gathers the data of the
paper's Fig. 7 (adversarial examples beside noise of the same size); the report draws it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from torch import nn

from intriguing import records
from intriguing.attacks import LBFGS, Attack, LBFGSConfig, gaussian_noise, rescale_perturbation, rms_distortion
from intriguing.attacks.base import logits_of
from intriguing.errors import IntriguingError, check_count, check_images, check_labels
from intriguing.seeding import random_targets
from intriguing.stats import Estimate, mean_interval, wilson_interval

TENSORS = ("adversarial", "target", "success", "distortion")


# --- predictions and errors ---------------------------------------------------------------------------


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
    """The model's classes for ``x``, in batches, without gradients."""
    return _logits(model, x, batch_size).argmax(1)


def _logits(model: nn.Module, x: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
    """The logits (N, K) after checking ``x`` (finite floats; any range) and the model's output: NaN inputs
    have an argmax too, and a label no class can equal would count as an error, both silently."""
    if not isinstance(x, torch.Tensor):
        raise IntriguingError(f"x: expected a torch.Tensor, got {type(x).__name__}; convert with torch.as_tensor")
    check_count("batch_size", batch_size)
    if len(x) == 0:
        return torch.empty(0, 1, device=x.device)
    check_images(x, "x", bounds=(-math.inf, math.inf))
    return logits_of(model, x, batch_size)


def error_estimate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Estimate:
    """Fraction of ``x`` that ``model`` misclassifies, with its Wilson interval (Tables 1-4's cells).

    :func:`intriguing.training.error_rate` is the same number as a plain float, without interval.
    """
    check_labels(y, "y", len(x))
    logits = _logits(model, x)
    check_labels(y, "y", len(x), logits.shape[1])
    return wilson_interval(int((logits.argmax(1) != y).sum()), len(y))


# --- adversarial sets ---------------------------------------------------------------------------------


@dataclass
class AdversarialSet:
    """One model's adversarial versions of a batch: the attack's chunked results joined, storable.

    ``adversarial`` is shaped like the batch (a failed example is left unchanged), ``target`` the
    classes aimed at, ``success`` which examples reached them, ``distortion`` the RMS distortion
    (NaN where the attack failed) and ``config`` the attack's hyper-parameters.
    """

    adversarial: torch.Tensor
    target: torch.Tensor
    success: torch.Tensor
    distortion: torch.Tensor
    config: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.adversarial)

    def success_rate(self) -> Estimate:
        return wilson_interval(int(self.success.sum()), len(self.success))

    def mean_distortion(self) -> Estimate:
        """The paper's "average minimum distortion" (Tables 1 and 3), over the successful examples."""
        return mean_interval(self.distortion)

    def save(self, path: str | Path, metadata: Mapping[str, str] | None = None) -> None:
        """Write the tensors, the attack config and string ``metadata`` to a safetensors file, atomically."""
        tensors = {name: getattr(self, name).detach().contiguous().cpu() for name in TENSORS}
        extra = {**(metadata or {}), "config": json.dumps(records.to_jsonable(self.config))}
        records.write_bytes(path, save_tensors(tensors, metadata=extra))

    @classmethod
    def load(cls, path: str | Path) -> AdversarialSet:
        """Read a set written by :meth:`save`; a damaged file raises :class:`IntriguingError`."""
        tensors, metadata = _read(Path(path))
        missing = [name for name in TENSORS if name not in tensors]
        if missing:
            raise IntriguingError(f"{path}: not an adversarial set, missing tensors {missing}")
        if len({len(tensors[name]) for name in TENSORS}) != 1:
            raise IntriguingError(f"{path}: damaged adversarial set, its tensors differ in length")
        try:
            config = json.loads(metadata["config"])
        except (KeyError, ValueError):
            raise IntriguingError(f"{path}: damaged adversarial set, no readable attack config") from None
        return cls(**{name: tensors[name] for name in TENSORS}, config=config)


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and string metadata of a safetensors file (errors as one clear line)."""
    try:
        blob = path.read_bytes()
        tensors = load_tensors(blob)  # checks the header and that every tensor's bytes are there
        header = json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])  # u64 length, then JSON
    except (SafetensorError, OSError, ValueError) as e:
        raise IntriguingError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, dict(header.get("__metadata__") or {})


def attack_model(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, attack: Attack | None = None,
                 batch_size: int = 1000, on_batch: Callable[[float], None] | None = None) -> AdversarialSet:
    """Targeted adversarial examples for ``model``, ``batch_size`` examples at a time (bounded memory).

    ``attack`` is any :class:`~intriguing.attacks.Attack` (or callable ``attack(model, x, target=t)``
    returning an ``AttackResult``); ``on_batch(fraction_done)`` is called after each batch (progress
    display). The default attack is the paper's (Section 4.1): box-constrained L-BFGS with the line
    search on ``c``, unrefined (:meth:`LBFGSConfig.paper`), since the refinement finds examples
    closer to the boundary, which transfer less than the paper's.
    """
    check_images(x, "x")
    attack = attack if attack is not None else LBFGS(LBFGSConfig.paper())
    if isinstance(attack, type) or not callable(attack):
        got = f"the class {attack.__name__}" if isinstance(attack, type) else type(attack).__name__
        raise IntriguingError(f"attack: expected an Attack such as LBFGS(config), got {got}")
    check_count("batch_size", batch_size)
    parts = []
    for start in range(0, len(x), batch_size):
        parts.append(attack(model, x[start : start + batch_size], target=targets[start : start + batch_size]))
        if on_batch is not None:
            on_batch(min(start + batch_size, len(x)) / len(x))
    return AdversarialSet(**{name: torch.cat([getattr(p, name) for p in parts]) for name in TENSORS},
                          config=dict(parts[0].config))


# --- rows of the transfer table: adversarial sets and their controls --------------------------------------


def gaussian_row(stddev: float) -> str:
    """Row name of a Gaussian-noise control, spelled as in the paper's Table 2."""
    return f"Gaussian noise, stddev={stddev:g}"


def amplified_row(source: str, stddev: float) -> str:
    """Row name of ``source``'s perturbations rescaled to RMS ``stddev`` (Table 4)."""
    return f"{source} amplified to stddev={stddev:g}"


def noise_rows(x: torch.Tensor, stddevs: Sequence[float], seed: int) -> dict[str, torch.Tensor]:
    """Gaussian-noise controls of each ``stddev`` (clipped to [0, 1]); the i-th draws with ``seed + i``."""
    return {gaussian_row(s): gaussian_noise(x, s, seed=seed + i) for i, s in enumerate(stddevs)}


def amplified_rows(x: torch.Tensor, adversarial: Mapping[str, torch.Tensor], stddev: float) -> dict[str, torch.Tensor]:
    """Each adversarial perturbation rescaled to RMS ``stddev``, direction kept (Table 4's magnified rows)."""
    return {amplified_row(name, stddev): rescale_perturbation(x, adv, stddev) for name, adv in adversarial.items()}


# --- the transfer table (Tables 2 and 4) -------------------------------------------------------------------


@dataclass
class TransferTable:
    """Rows: perturbed versions of the same ``n`` examples; columns: models (Tables 2 and 4).

    ``rows[row][column]`` is the column model's error rate on the row's images (measured against
    the true labels, so an example the model already got wrong counts as an error, as in the
    paper's noise rows); ``distortion[row]`` the mean RMS distance of the row's images from the
    clean ones (every example, an unchanged one counting 0).
    """

    columns: list[str]
    rows: dict[str, dict[str, Estimate]]
    distortion: dict[str, Estimate]
    n: int


def check_models(models: Mapping[str, nn.Module]) -> None:
    """Reject anything but a non-empty dict of name -> ``torch.nn.Module`` classifier."""
    if not isinstance(models, Mapping) or not models:
        got = f", got {type(models).__name__}" if not isinstance(models, Mapping) else ""
        raise IntriguingError(f"models: expected a non-empty dict of name -> torch.nn.Module classifier{got}")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise IntriguingError(f"models[{name!r}]: expected a torch.nn.Module, got {type(model).__name__}")


def transfer_table(models: Mapping[str, nn.Module], perturbed: Mapping[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> TransferTable:
    """Feed every perturbed set (row) to every model (column): error rates with Wilson intervals."""
    check_models(models)
    check_images(x, "x")
    check_labels(y, "y", len(x))
    for row, images in perturbed.items():
        check_images(images, f"perturbed[{row!r}]")
        if images.shape != x.shape:
            raise IntriguingError(
                f"perturbed[{row!r}]: expected the shape of x {tuple(x.shape)}, got {tuple(images.shape)}"
            )
    rows = {row: {name: error_estimate(model, images, y) for name, model in models.items()}
            for row, images in perturbed.items()}
    distortion = {row: mean_interval(rms_distortion(x, images)) for row, images in perturbed.items()}
    return TransferTable(columns=list(models), rows=rows, distortion=distortion, n=len(x))


def cross_model_table(models: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor, *,
                      attack: Attack | None = None, targets: torch.Tensor | None = None, seed: int = 0,
                      gaussian: Sequence[float] = (0.1, 0.3), amplify_to: float | None = None,
                      batch_size: int = 1000) -> TransferTable:
    """Table 2 (or 4) for any classifiers: attack each model, feed the results and controls to all.

    Rows are each model's adversarial examples (named like the model), Gaussian noise of each
    stddev in ``gaussian``, and with ``amplify_to`` each model's perturbations rescaled to that
    RMS. ``targets`` default to :func:`intriguing.seeding.random_targets` with ``seed``; noise
    draws use ``seed`` too.
    """
    check_models(models)
    check_images(x, "x")
    check_labels(y, "y", len(x))
    if isinstance(gaussian, (str, bytes)) or not isinstance(gaussian, Sequence):
        raise IntriguingError(f"gaussian: expected a sequence of stddevs such as (0.1, 0.3), got {gaussian!r}")
    if targets is None:
        targets = random_targets(y, _num_classes(models, x), seed=seed)
    adversarial = {name: attack_model(model, x, targets, attack=attack, batch_size=batch_size).adversarial
                   for name, model in models.items()}
    rows = dict(adversarial)
    rows.update(noise_rows(x, gaussian, seed))
    if amplify_to is not None:
        rows.update(amplified_rows(x, adversarial, amplify_to))
    return transfer_table(models, rows, x, y)


@torch.no_grad()
def _num_classes(models: Mapping[str, nn.Module], x: torch.Tensor) -> int:
    """The models' common number of classes: one target must mean the same class to every model."""
    counts = {name: int(model(x[:1]).shape[1]) for name, model in models.items()}
    if len(set(counts.values())) > 1:
        listed = ", ".join(f"{name}: {count}" for name, count in counts.items())
        raise IntriguingError(f"models: their numbers of classes differ ({listed}); transfer needs classifiers of "
                              "the same classes")
    return next(iter(counts.values()))


# --- Fig. 7: adversarial examples beside noise of the same size ---------------------------------------------


@dataclass
class NoiseComparison:
    """One model's panels of the paper's Fig. 7 for the ``shown`` examples.

    ``clean``, ``adversarial`` and ``noisy`` images (Gaussian noise whose stddev is the model's mean
    adversarial RMS, clipped to [0, 1]); ``difference`` the perturbation magnified per example into
    [0, 1] (0.5 is no change); ``classes`` the model's classes of the three kinds of image;
    ``rms`` the realised RMS of the adversarial and the noisy images.
    """

    shown: torch.Tensor
    clean: torch.Tensor
    adversarial: torch.Tensor
    difference: torch.Tensor
    noisy: torch.Tensor
    classes: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
    rms: tuple[torch.Tensor, torch.Tensor]


def noise_comparison(models: Mapping[str, nn.Module], x: torch.Tensor, adversarial: Mapping[str, torch.Tensor], *,
                     examples: int = 3, seed: int = 0) -> dict[str, NoiseComparison]:
    """The data of a Fig. 7-like grid, per name of ``adversarial`` (a name of ``models``).

    Shown examples are the first ``examples`` that every model's attack changed. The paper's point
    (Section 4.2, Fig. 7): the adversarial images look unchanged yet fool the model, while noise of
    the same size is visible yet mostly harmless.
    """
    check_models(models)
    check_images(x, "x")
    if not isinstance(adversarial, Mapping) or not adversarial:
        raise IntriguingError("adversarial: expected a non-empty dict of model name -> adversarial images")
    for name, images in adversarial.items():
        if name not in models:
            raise IntriguingError(f"adversarial[{name!r}]: no model of that name; models: "
                                  f"{', '.join(map(repr, models))}")
        check_images(images, f"adversarial[{name!r}]")
    changed = torch.stack([rms_distortion(x, adv) > 0 for adv in adversarial.values()]).all(0)
    shown = (torch.nonzero(changed).flatten() if changed.any() else torch.arange(len(x)))[:examples]
    return {name: _compare(models[name], x, adv, shown, seed) for name, adv in adversarial.items()}


def _compare(model: nn.Module, x: torch.Tensor, adv: torch.Tensor, shown: torch.Tensor, seed: int) -> NoiseComparison:
    distortion = rms_distortion(x, adv)
    stddev = float(distortion[distortion > 0].mean()) if (distortion > 0).any() else 0.0
    clean, attacked = x[shown], adv[shown]
    noisy = gaussian_noise(clean, stddev, seed=seed)
    change = attacked - clean
    scale = change.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (change.dim() - 1))
    return NoiseComparison(
        shown=shown, clean=clean, adversarial=attacked, difference=0.5 + 0.5 * change / scale, noisy=noisy,
        classes=tuple(predictions(model, images) for images in (clean, attacked, noisy)),
        rms=(rms_distortion(clean, attacked), rms_distortion(clean, noisy)),
    )

"""Tables 1-4 of Szegedy et al. 2014 (Section 4.2): how far adversarial examples carry.

The paper attacks each model with box-constrained L-BFGS (Section 4.1), then feeds every model's
adversarial examples to every other model: Table 2 across architectures and regularisations
(all trained on the full training set, examples from the *training* set), Table 4 across
training sets (models trained on the disjoint halves P1 and P2, examples from the *test* set).
Gaussian-noise rows are the control, and Table 4's "amplified" rows rescale each perturbation to
RMS 0.1. Both tables have one shape - rows of perturbed versions of the same N examples, columns
of models, cells of error rates - computed by one function, :func:`transfer_table`;
:func:`cross_model_table` adds the attacks and the controls for any dict of classifiers::

    table = transfer.cross_model_table({"a": model_a, "b": model_b}, x, y)
    table.rows["a"]["b"].value      # error of model b on the adversarial examples made for a

Tables 1 and 3 list each model's errors and the mean minimum distortion of its adversarial
examples. Every rate carries a Wilson 95% interval and every mean a Student-t interval
(:class:`Estimate`), so the report can tell which differences from the paper matter. The module
ends with the four report sections ``table1`` ... ``table4``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from scipy import stats
from torch import nn

from intriguing import __version__, data, records, report, training, zoo
from intriguing.attacks import LBFGS, gaussian_noise, rescale_perturbation, rms_distortion
from intriguing.checkpoint import read_metadata
from intriguing.errors import IntriguingError, check_images, check_labels
from intriguing.reproduce import Claim, Context, Section, paper, preset_settings, register

CONFIDENCE = 0.95
# The paper's attack is L-BFGS with the line search on c alone: the refinement towards the decision
# boundary that LBFGS adds by default goes beyond the paper (smaller distortions, examples closer to
# the boundary, which transfer less), so this module switches it off to compare like with like.
PAPER_ATTACK = {"refine": False}
TARGET_RULE = (
    "targeted attacks; each example's target is drawn uniformly from the 9 wrong labels, "
    "t = (y + k) mod 10 with k ~ U{1..9} from a torch.Generator seeded with the run's seed"
)


# --- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A measured number with its 95% confidence interval ``[low, high]`` and sample size ``n``.

    ``method`` is ``"wilson"`` (a proportion: Wilson score interval, honest near 0 and 1, where the
    paper's rates often sit) or ``"t"`` (a mean: Student-t interval). NaN marks "not measured".
    """

    value: float
    low: float
    high: float
    n: int
    method: str


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> Estimate:
    """Proportion ``successes / n`` with its Wilson score interval."""
    if n <= 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "wilson")
    if not 0 <= successes <= n:
        raise IntriguingError(f"successes: expected 0 <= successes <= n = {n}, got {successes}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n, "wilson")


def mean_interval(values: torch.Tensor | Sequence[float], confidence: float = CONFIDENCE) -> Estimate:
    """Mean of the finite ``values`` (NaN = a failed attack, left out) with its Student-t interval."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    n = len(finite)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "t")
    mean = float(finite.mean())
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, "t")
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * float(finite.std(ddof=1)) / math.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n, "t")


# --- examples, targets, predictions -------------------------------------------------------------


def example_indices(total: int, n: int | None, seed: int) -> torch.Tensor:
    """A seeded random choice of ``n`` of ``total`` examples, sorted (``None`` or ``n >= total``: all)."""
    if n is None or n >= total:
        return torch.arange(total)
    if n <= 0:
        raise IntriguingError(f"examples: expected a positive number of examples to attack, got {n}")
    chosen = np.random.default_rng(seed).permutation(total)[:n]
    return torch.from_numpy(np.sort(chosen))


def random_targets(labels: torch.Tensor, seed: int, num_classes: int = zoo.NUM_CLASSES) -> torch.Tensor:
    """One target per example, uniform over the ``num_classes - 1`` wrong labels (see ``TARGET_RULE``)."""
    check_labels(labels, "labels", len(labels), num_classes)
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels + shift) % num_classes


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 10_000) -> torch.Tensor:
    """The model's classes for ``x``, in batches, without gradients."""
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def error_rate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Estimate:
    """Fraction of ``x`` that ``model`` misclassifies, with its Wilson interval."""
    return wilson_interval(int((predictions(model, x) != y).sum()), len(y))


# --- adversarial sets ------------------------------------------------------------------------------


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

    def success_rate(self) -> Estimate:
        return wilson_interval(int(self.success.sum()), len(self.success))

    def mean_distortion(self) -> Estimate:
        """The paper's "average minimum distortion" (Tables 1 and 3), over the successful examples."""
        return mean_interval(self.distortion)

    def save(self, path: str | Path) -> None:
        """Write the tensors and the attack config to a safetensors file, atomically."""
        tensors = {"adversarial": self.adversarial, "target": self.target, "success": self.success,
                   "distortion": self.distortion}
        blob = save_tensors({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                            metadata={"config": json.dumps(records.to_jsonable(self.config))})
        records.write_bytes(path, blob)

    @classmethod
    def load(cls, path: str | Path) -> AdversarialSet:
        tensors = load_tensors(Path(path).read_bytes())
        return cls(**tensors, config=json.loads(read_metadata(path)["config"]))


Attack = Callable[..., Any]  # attack(model, x, target=t) -> AttackResult, e.g. intriguing.attacks.LBFGS()


def attack_model(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, *, attack: Attack | None = None,
                 batch_size: int = 1000, on_batch: Callable[[float], None] | None = None) -> AdversarialSet:
    """Targeted adversarial examples for ``model``, ``batch_size`` examples at a time (bounded memory).

    ``on_batch(fraction_done)`` is called after each batch (progress display). The default attack
    is the paper's: box-constrained L-BFGS with the line search on ``c``, unrefined (``PAPER_ATTACK``).
    """
    check_images(x, "x")
    attack = attack if attack is not None else LBFGS(**PAPER_ATTACK)
    if batch_size <= 0:
        raise IntriguingError(f"batch_size: expected a positive number of examples, got {batch_size}")
    parts = []
    for start in range(0, len(x), batch_size):
        parts.append(attack(model, x[start : start + batch_size], target=targets[start : start + batch_size]))
        if on_batch is not None:
            on_batch(min(start + batch_size, len(x)) / len(x))
    return AdversarialSet(
        adversarial=torch.cat([p.adversarial for p in parts]),
        target=torch.cat([p.target for p in parts]),
        success=torch.cat([p.success for p in parts]),
        distortion=torch.cat([p.distortion for p in parts]),
        config=dict(parts[0].config),
    )


# --- the transfer table (Tables 2 and 4) ----------------------------------------------------------------


def gaussian_row(stddev: float) -> str:
    """Row name of a Gaussian-noise control, spelled as in the paper's Table 2."""
    return f"Gaussian noise, stddev={stddev:g}"


def amplified_row(source: str, stddev: float) -> str:
    return f"{source} amplified to stddev={stddev:g}"


def noise_rows(x: torch.Tensor, stddevs: Sequence[float], seed: int) -> dict[str, torch.Tensor]:
    """Gaussian-noise controls of each ``stddev`` (clipped to [0, 1]); the i-th draws with ``seed + i``."""
    return {gaussian_row(s): gaussian_noise(x, s, seed=seed + i) for i, s in enumerate(stddevs)}


def amplified_rows(x: torch.Tensor, adversarial: Mapping[str, torch.Tensor], stddev: float) -> dict[str, torch.Tensor]:
    """Each adversarial perturbation rescaled to RMS ``stddev``, direction kept (Table 4's magnified rows)."""
    return {amplified_row(name, stddev): rescale_perturbation(x, adv, stddev) for name, adv in adversarial.items()}


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


def _check_models(models: Mapping[str, nn.Module]) -> None:
    if not models:
        raise IntriguingError("models: expected a non-empty dict of name -> torch.nn.Module classifier")
    for name, model in models.items():
        if not isinstance(model, nn.Module):
            raise IntriguingError(f"models[{name!r}]: expected a torch.nn.Module, got {type(model).__name__}")


def transfer_table(models: Mapping[str, nn.Module], perturbed: Mapping[str, torch.Tensor], x: torch.Tensor,
                   y: torch.Tensor) -> TransferTable:
    """Feed every perturbed set (row) to every model (column): error rates with Wilson intervals."""
    _check_models(models)
    check_images(x, "x")
    check_labels(y, "y", len(x))
    for row, images in perturbed.items():
        check_images(images, f"perturbed[{row!r}]")
        if images.shape != x.shape:
            raise IntriguingError(
                f"perturbed[{row!r}]: expected the shape of x {tuple(x.shape)}, got {tuple(images.shape)}"
            )
    rows = {row: {name: error_rate(model, images, y) for name, model in models.items()}
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
    RMS. ``targets`` default to :func:`random_targets` with ``seed``; noise draws use ``seed`` too.
    """
    _check_models(models)
    check_images(x, "x")
    check_labels(y, "y", len(x))
    if targets is None:
        targets = random_targets(y, seed, _num_classes(models, x))
    adversarial = {name: attack_model(model, x, targets, attack=attack, batch_size=batch_size).adversarial
                   for name, model in models.items()}
    rows = dict(adversarial)
    rows.update(noise_rows(x, gaussian, seed))
    if amplify_to is not None:
        rows.update(amplified_rows(x, adversarial, amplify_to))
    return transfer_table(models, rows, x, y)


@torch.no_grad()
def _num_classes(models: Mapping[str, nn.Module], x: torch.Tensor) -> int:
    return int(next(iter(models.values()))(x[:1]).shape[1])


# --- Fig. 7: adversarial examples beside noise of the same size ------------------------------------


def adversarial_figure(models: Mapping[str, nn.Module], x: torch.Tensor, adversarial: Mapping[str, torch.Tensor], *,
                       examples: int = 3, seed: int = 0) -> Figure:
    """A Fig. 7-like grid: one row per model; per example the original, the adversarial example,
    their difference magnified (grey is 0, black and white the example's largest change), and
    Gaussian noise whose stddev is the model's mean adversarial distortion. Titles give the model's
    class (and the realised RMS).

    ``adversarial`` maps a name of ``models`` to that model's adversarial versions of ``x`` (grey or
    RGB images). Shown examples are the first ``examples`` that every model's attack changed. The paper's
    point (Fig. 7): the adversarial images look unchanged yet fool the model, while noise of the
    same size is visible yet mostly harmless.
    """
    _check_models(models)
    check_images(x, "x")
    changed = torch.stack([rms_distortion(x, adv) > 0 for adv in adversarial.values()]).all(0)
    shown = (torch.nonzero(changed).flatten() if changed.any() else torch.arange(len(x)))[:examples]
    figure = Figure(figsize=(0.95 * 4 * len(shown), 1.25 * len(adversarial)), layout="constrained")
    axes = figure.subplots(len(adversarial), 4 * len(shown), squeeze=False)
    for row, (name, adv) in enumerate(adversarial.items()):
        distortion = rms_distortion(x, adv)
        stddev = float(distortion[distortion > 0].mean()) if (distortion > 0).any() else 0.0
        clean, attacked = x[shown], adv[shown]
        noisy = gaussian_noise(clean, stddev, seed=seed)
        change = attacked - clean
        difference = 0.5 + 0.5 * change / change.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        classes = [predictions(models[name], images) for images in (clean, attacked, noisy)]
        rms = [rms_distortion(clean, attacked), rms_distortion(clean, noisy)]
        for j in range(len(shown)):
            panels = [
                (clean[j], f"{classes[0][j]}"),
                (attacked[j], f"→{classes[1][j]} ({rms[0][j]:.3f})"),
                (difference[j], "difference"),
                (noisy[j], f"noise: {classes[2][j]} ({rms[1][j]:.3f})"),
            ]
            for p, (image, title) in enumerate(panels):
                ax = axes[row, 4 * j + p]
                ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)  # CHW -> HW(C)
                ax.set_title(title, fontsize=6)
                ax.set_xticks([])
                ax.set_yticks([])
        axes[row, 0].set_ylabel(name, fontsize=7)
    figure.suptitle("original (class) · adversarial (→ class, RMS) · difference · Gaussian noise with stddev = the "
                    "model's mean adversarial RMS (class, RMS after clipping to [0, 1])", fontsize=8)
    return figure


# --- the report sections table1 ... table4 ---------------------------------------------------------------


@dataclass(frozen=True)
class TransferSettings:
    """One preset's configuration of Tables 1-4 (hashed: changing it recomputes the tables).

    ``examples`` attacked per model (``None``: the whole split, the paper's scale); ``limit`` and
    ``overrides`` shrink training for quick presets (``None``: the zoo's full recipes), and
    ``error_examples`` measures the clean errors on the first images of each split only (``None``:
    all of it); ``attack`` holds :class:`~intriguing.attacks.LBFGS` keyword arguments; ``seed``
    drives the models, the choice of examples, the targets and the noise.
    """

    examples: int | None
    limit: int | None = None
    overrides: dict[str, Any] | None = None
    error_examples: int | None = None
    attack: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 500  # examples per attack call: the progress display's step
    seed: int = 0


SETTINGS = preset_settings(
    smoke=TransferSettings(examples=20, limit=1000, overrides={"epochs": 3, "batch_size": 32, "pretrain_epochs": 1},
                           error_examples=2000, attack={**PAPER_ATTACK, "max_solves": 10, "max_iter": 50}),
    default=TransferSettings(examples=1000, attack=PAPER_ATTACK),
    full=TransferSettings(examples=None, attack=PAPER_ATTACK, batch_size=5000),
)


@dataclass(frozen=True)
class Experiment:
    """The models of a pair of tables and the split whose examples are attacked.

    ``models`` holds (the paper's column name, zoo name, training split).
    """

    models: tuple[tuple[str, str, str], ...]
    attacked_split: str


# Tables 1-2: six models trained on the full training set; the paper attacked *training* examples.
CROSS_MODEL = Experiment(
    models=tuple((name, name, "train") for name in
                 ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10")),
    attacked_split="train",
)
# Tables 3-4: models on the disjoint halves P1 / P2 ("FC100-100-10'" is FC100-100-10 on P2); test examples.
CROSS_TRAINING_SET = Experiment(
    models=(("FC100-100-10", "FC100-100-10", "P1"), ("FC123-456-10", "FC123-456-10", "P1"),
            ("FC100-100-10'", "FC100-100-10", "P2")),
    attacked_split="test",
)
TABLE2_NOISE = (0.1, 0.3)
TABLE4_NOISE = (0.06, 0.1)
TABLE4_AMPLIFIED = 0.1
DISTORTION_COLUMNS = ("av_min_distortion", "av_distortion", "min_av_distortion")
FIGURE = "fig7_adversarial_vs_noise.png"


@dataclass
class Prepared:
    """An experiment ready to tabulate: trained models, the attacked examples and their adversarial sets."""

    models: dict[str, nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    adversarial: dict[str, AdversarialSet]
    protocol: dict[str, Any]


def _prepare(ctx: Context, s: TransferSettings, experiment: Experiment, share: float) -> Prepared:
    """Train (or load) the experiment's models, choose the examples and targets, and attack every model.

    ``share`` is the part of the section's time this takes (for the progress display): the first
    half training, the second attacking.
    """
    models, cache_keys = _train(ctx, s, experiment, share / 2)
    images, labels = data.load_mnist(experiment.attacked_split, ctx.data_dir)
    index = example_indices(len(images), s.examples, s.seed)
    x, y = images[index], labels[index]
    targets = random_targets(y, s.seed)
    adversarial = {}
    for i, (column, model) in enumerate(models.items()):
        def progress(fraction: float, i: int = i, column: str = column) -> None:
            ctx.stage(f"attack {column} ({len(x)} examples)", share * (0.5 + 0.5 * (i + fraction) / len(models)))

        path = ctx.artifacts / f"adversarial-{_attack_key(s, experiment, cache_keys[column])}.safetensors"
        adversarial[column] = _stored_attack(path, functools.partial(
            attack_model, model, x, targets, attack=LBFGS(**s.attack), batch_size=s.batch_size, on_batch=progress))
    protocol = {
        "n_attacked": len(x),
        "attacked_split": experiment.attacked_split,
        "target_rule": TARGET_RULE,
        "seeds": {"models": s.seed, "examples": s.seed, "targets": s.seed, "noise": s.seed},
        "attack": next(iter(adversarial.values())).config,
        "training": {"limit": s.limit, "overrides": s.overrides, "models": {c: [n, on] for c, n, on in experiment.models}},
        "error_examples": s.error_examples,
        "intervals": f"{100 * CONFIDENCE:.0f}% Wilson score intervals for rates, Student-t for mean distortions",
        "attack_success": {c: a.success_rate() for c, a in adversarial.items()},
    }
    return Prepared(models, x, y, adversarial, protocol)


def _train(ctx: Context, s: TransferSettings, experiment: Experiment,
           share: float) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The experiment's models by column name (from the checkpoint cache when there) and their cache keys."""
    models, cache_keys = {}, {}
    for i, (column, name, on) in enumerate(experiment.models):
        ctx.stage(f"train {name} on {on}", share * i / len(experiment.models))
        models[column], result = training.trained_with_result(
            name, on=on, seed=s.seed, limit=s.limit, overrides=s.overrides, data_dir=ctx.data_dir,
            cache=ctx.cache, progress=False)  # one progress line: the run's
        cache_keys[column] = result.cache_key
    return models, cache_keys


def _stored_attack(path: Path, attack: Callable[[], AdversarialSet]) -> AdversarialSet:
    """Load the adversarial set at ``path``, or compute and store it there.

    Tables 1 and 2 (and 3 and 4) share the attacks, stored per model: a resumed run redoes at most
    the one model it was attacking when killed.
    """
    if path.is_file():
        return AdversarialSet.load(path)
    adversarial = attack()
    adversarial.save(path)
    return adversarial


def _attack_key(s: TransferSettings, experiment: Experiment, model_key: str) -> str:
    """Names a stored attack by what determines it: model weights, examples, targets, attack, library version."""
    blob = json.dumps({"model": model_key, "split": experiment.attacked_split, "examples": s.examples,
                       "seed": s.seed, "attack": s.attack, "batch_size": s.batch_size, "version": __version__},
                      sort_keys=True)
    return f"{model_key}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def _clean_examples(ctx: Context, s: TransferSettings, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images and labels on which clean errors are measured (all, or the first ``error_examples``)."""
    images, labels = data.load_mnist(split, ctx.data_dir)
    return images[: s.error_examples], labels[: s.error_examples]


def run_table1(ctx: Context, s: TransferSettings, _: dict) -> dict[str, Any]:
    """Table 1: training and test error, and the average minimum distortion over attacked training examples."""
    prepared = _prepare(ctx, s, CROSS_MODEL, share=0.9)
    ctx.stage("errors on the training and test sets", 0.95)
    train, test = (_clean_examples(ctx, s, split) for split in ("train", "test"))
    rows = {
        column: {"train_error": error_rate(model, *train), "test_error": error_rate(model, *test),
                 "av_min_distortion": prepared.adversarial[column].mean_distortion()}
        for column, model in prepared.models.items()
    }
    return {"columns": list(paper("table1")["columns"]), "rows": rows, **prepared.protocol}


def run_table3(ctx: Context, s: TransferSettings, _: dict) -> dict[str, Any]:
    """Table 3: errors on P1, P2 and test of the P1/P2 models, and the mean minimum distortion on test examples."""
    prepared = _prepare(ctx, s, CROSS_TRAINING_SET, share=0.9)
    ctx.stage("errors on P1, P2 and test", 0.95)
    splits = {f"error_{split}": _clean_examples(ctx, s, split) for split in ("P1", "P2", "test")}
    rows = {}
    for column, _name, on in CROSS_TRAINING_SET.models:
        model = prepared.models[column]
        rows[f"{column} (trained on {on})"] = {
            **{key: error_rate(model, *split) for key, split in splits.items()},
            "min_av_distortion": prepared.adversarial[column].mean_distortion(),
        }
    return {"columns": list(paper("table3")["columns"]), "rows": rows, **prepared.protocol}


def _transfer_result(ctx: Context, s: TransferSettings, experiment: Experiment, noise: Sequence[float],
                     amplify_to: float | None) -> tuple[Prepared, TransferTable]:
    """Tables 2 and 4: the experiment's adversarial sets and controls fed to all its models."""
    prepared = _prepare(ctx, s, experiment, share=0.8)
    ctx.stage("feed every row to every model", 0.85)
    adversarial = {column: a.adversarial for column, a in prepared.adversarial.items()}
    rows = dict(adversarial)
    rows.update(noise_rows(prepared.x, noise, s.seed))
    if amplify_to is not None:
        rows.update(amplified_rows(prepared.x, adversarial, amplify_to))
    return prepared, transfer_table(prepared.models, rows, prepared.x, prepared.y)


def run_table2(ctx: Context, s: TransferSettings, _: dict) -> dict[str, Any]:
    """Table 2: cross-model generalization, with Gaussian noise rows; also draws the Fig. 7-like grid."""
    prepared, table = _transfer_result(ctx, s, CROSS_MODEL, TABLE2_NOISE, None)
    rows = _in_paper_order("table2", {row: {**cells, "av_distortion": table.distortion[row]}
                                      for row, cells in table.rows.items()})
    ctx.stage("draw Fig. 7", 0.95)
    figure = adversarial_figure(prepared.models, prepared.x,
                                {c: a.adversarial for c, a in prepared.adversarial.items()}, seed=s.seed)
    figure.savefig(ctx.figures / FIGURE, dpi=110)
    return {"columns": list(paper("table2")["columns"]), "rows": rows,
            "noise_seeds": {gaussian_row(sd): s.seed + i for i, sd in enumerate(TABLE2_NOISE)},
            "figure": f"figures/{FIGURE}", **prepared.protocol}


def table4_row_name(row: str) -> str:
    """The paper's Table 4 name of a transfer-table row (the paper puts its measured distortion in it)."""
    if row.startswith("Gaussian noise, "):
        return row.replace("Gaussian noise, ", "Gaussian noise with ")
    if " amplified to " in row:
        return f"Distorted for {row}"
    prefix = f"Distorted for {row} (av. stddev="
    return next(name for name in paper("table4")["rows"] if name.startswith(prefix))


def _in_paper_order(key: str, rows: dict[str, Any]) -> dict[str, Any]:
    """``rows`` ordered as the paper's table ``key`` lists them (the paper interleaves noise and amplified rows)."""
    return {name: rows[name] for name in paper(key)["rows"]}


def run_table4(ctx: Context, s: TransferSettings, _: dict) -> dict[str, Any]:
    """Table 4: cross-training-set generalization on test examples, noise rows and amplified rows."""
    prepared, table = _transfer_result(ctx, s, CROSS_TRAINING_SET, TABLE4_NOISE, TABLE4_AMPLIFIED)
    return {"columns": list(paper("table4")["columns"]),
            "rows": _in_paper_order("table4", {table4_row_name(row): cells for row, cells in table.rows.items()}),
            "row_distortion": _in_paper_order("table4", {table4_row_name(row): d for row, d in table.distortion.items()}),
            "noise_seeds": {gaussian_row(sd): s.seed + i for i, sd in enumerate(TABLE4_NOISE)},
            **prepared.protocol}


# --- rendering ----------------------------------------------------------------------------------


def paper_cells(key: str) -> dict[str, dict[str, float]]:
    """The paper's table ``key`` as row -> column -> number (its JSON stores rows as lists or dicts)."""
    table = paper(key)
    return {row: dict(zip(table["columns"], values)) if isinstance(values, list)
            else {c: values[c] for c in table["columns"]}
            for row, values in table["rows"].items()}


def _kind(column: str) -> str:
    return "distortion" if column in DISTORTION_COLUMNS else "rate"


def _comparison(result: dict[str, Any], key: str, extra: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The paper's table with ours beside every number, rows and columns in the paper's order."""
    theirs = paper_cells(key)
    columns = paper(key)["columns"]
    header = ["", *columns] + (list(extra) if extra else [])
    lines = []
    for row, cells in theirs.items():
        ours = result["rows"].get(row, {})
        line = [row] + [report.cell(cells[c], ours.get(c), _kind(c)) for c in columns]
        line += [report.number((e.get(row) or {}).get("value"), "distortion") for e in (extra or {}).values()]
        lines.append(line)
    return report.table(header, lines)


def _protocol_note(result: dict[str, Any]) -> str:
    success = ", ".join(f"{c} {report.number(e['value'], 'rate')}" for c, e in result["attack_success"].items())
    training = result["training"]
    scale = ("full zoo recipes" if training["limit"] is None and not training["overrides"]
             else f"quick training: limit {training['limit']}, overrides {training['overrides']}")
    errors = ("whole splits" if result["error_examples"] is None
              else f"the first {result['error_examples']} images of each split")
    return (f"N = {result['n_attacked']} {result['attacked_split']} examples attacked per model; "
            f"{result['target_rule']}; seed {result['seeds']['examples']}; models: {scale}; clean errors on "
            f"{errors}. Attack success: {success}. Intervals: {result['intervals']}.")


def render_table1(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Errors on undistorted training and test images; the distortion is averaged over the attacked training "
        "examples (successful attacks).", report.LEGEND, _comparison(result, "table1"), _protocol_note(result)])


def render_table2(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Rows: examples distorted for the row's model (or noise); columns: the model fed with them; cells: its "
        "error rate. Noise is clipped to [0, 1], so its realised RMS (`av_distortion`, ours) is below the nominal "
        "stddev that the paper lists.", report.LEGEND, _comparison(result, "table2"), _protocol_note(result),
        f"![Adversarial examples beside Gaussian noise of the same RMS (cf. the paper's Fig. 7)]({result['figure']})"])


def render_table3(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Errors on undistorted data; the distortion is averaged over the attacked *test* examples.",
        report.LEGEND, _comparison(result, "table3"), _protocol_note(result)])


def render_table4(result: dict[str, Any], ctx: Context) -> str:
    return "\n\n".join([
        "Adversarial examples made on the test set for each model (rows) fed to the three models; the paper's row "
        "names carry its own average distortion, ours is in the last column.", report.LEGEND,
        _comparison(result, "table4", {"av. distortion (ours)": result["row_distortion"]}), _protocol_note(result)])


# --- the paper's qualitative claims -------------------------------------------------------------


def _value(result: dict[str, Any], row: str, column: str) -> float:
    value = result["rows"][row][column]["value"]
    return math.nan if value is None else value


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def claims_table1(result: dict[str, Any]) -> list[Claim]:
    success = {c: e["value"] for c, e in result["attack_success"].items()}
    distortion = [_value(result, f"FC10({lam})", "av_min_distortion") for lam in ("1e-4", "1e-2", "1")]
    return [
        Claim("table1", "Every model has adversarial examples (Sec. 4.2): for every model the attack reaches "
              "the target on at least 99% of the examples (the evidence lists how close they are)",
              min(success.values()) >= 0.99,
              f"lowest success {min(success.values()):.1%} ({min(success, key=success.get)}); mean distortions "
              + ", ".join(f"{c} {_value(result, c, 'av_min_distortion'):.3f}" for c in result["rows"])),
        Claim("table1", "Stronger weight decay makes a softmax model need larger distortions: "
              "FC10(1e-4) < FC10(1e-2) < FC10(1)",
              distortion[0] < distortion[1] < distortion[2],
              " < ".join(f"{d:.3f}" for d in distortion) + " (paper: 0.062 < 0.10 < 0.14)"),
    ]


def claims_table2(result: dict[str, Any]) -> list[Claim]:
    models = [c for c in result["columns"] if c not in DISTORTION_COLUMNS]
    diagonal = {m: _value(result, m, m) for m in models}
    transferred = {c: _mean([_value(result, r, c) for r in models if r != c]) for c in models}
    noise = {sd: {c: _value(result, gaussian_row(sd), c) for c in models} for sd in TABLE2_NOISE}
    weak, strong = TABLE2_NOISE
    return [
        Claim("table2", "Adversarial examples fool the model they were made for (the diagonal is 100%)",
              min(diagonal.values()) >= 0.99,
              f"diagonal from {min(diagonal.values()):.1%} to {max(diagonal.values()):.1%}"),
        Claim("table2", f"Adversarial examples made for other models cause more errors than Gaussian noise of "
              f"stddev {weak:g}, itself larger than their distortion: in every column the mean off-diagonal "
              f"error exceeds the noise row's", all(transferred[c] > noise[weak][c] for c in models),
              f"mean over columns: off-diagonal {_mean(list(transferred.values())):.1%}, noise {weak:g} "
              f"{_mean(list(noise[weak].values())):.1%}, noise {strong:g} {_mean(list(noise[strong].values())):.1%}"),
    ]


def claims_table4(result: dict[str, Any]) -> list[Claim]:
    models = result["columns"]
    adversarial = {m: table4_row_name(m) for m in models}
    amplified = {m: table4_row_name(amplified_row(m, TABLE4_AMPLIFIED)) for m in models}
    small, same = (table4_row_name(gaussian_row(sd)) for sd in TABLE4_NOISE)
    pairs = [(r, c) for r in models for c in models if r != c]
    off = {p: _value(result, adversarial[p[0]], p[1]) for p in pairs}
    off_amplified = {p: _value(result, amplified[p[0]], p[1]) for p in pairs}
    return [
        Claim("table4", "Adversarial examples transfer to models trained on another training set, weaker but "
              "present: every off-diagonal cell is below its row's diagonal and above Gaussian noise of "
              f"stddev {TABLE4_NOISE[0]:g} in its column",
              all(_value(result, small, c) < off[(r, c)] < _value(result, adversarial[r], r) for r, c in pairs),
              f"off-diagonal {min(off.values()):.1%}-{max(off.values()):.1%} (mean {_mean(list(off.values())):.1%}); "
              f"noise {TABLE4_NOISE[0]:g}: {_mean([_value(result, small, c) for c in models]):.1%}"),
        Claim("table4", f"Perturbations amplified to stddev {TABLE4_AMPLIFIED:g} transfer strongly: every "
              "off-diagonal cell exceeds the unamplified row's and Gaussian noise of the same stddev",
              all(off_amplified[(r, c)] > max(off[(r, c)], _value(result, same, c)) for r, c in pairs),
              f"amplified off-diagonal mean {_mean(list(off_amplified.values())):.1%} (paper 56%), unamplified "
              f"{_mean(list(off.values())):.1%}, noise {TABLE4_AMPLIFIED:g}: "
              f"{_mean([_value(result, same, c) for c in models]):.1%}"),
    ]


_TITLES = {
    "table1": "Table 1: the models, their errors and minimum distortions",
    "table2": "Table 2: cross-model generalization of adversarial examples",
    "table3": "Table 3: models trained on disjoint halves P1 and P2",
    "table4": "Table 4: cross-training-set generalization",
}
_SECTIONS = {
    "table1": (run_table1, render_table1, claims_table1),
    "table2": (run_table2, render_table2, claims_table2),
    "table3": (run_table3, render_table3, None),
    "table4": (run_table4, render_table4, claims_table4),
}
# Seconds per preset on an idle 2-core machine: Tables 1 and 3 train (the zoo's cached checkpoints
# make that free) and attack (~4 s per 1,000 examples per model); Tables 2 and 4 reuse both.
_ESTIMATES = {
    "table1": {"smoke": 8, "default": 240, "full": 1_800},
    "table2": {"smoke": 3, "default": 10, "full": 60},
    "table3": {"smoke": 3, "default": 90, "full": 250},
    "table4": {"smoke": 1, "default": 2, "full": 10},
}
for _key, (_run, _render, _claims) in _SECTIONS.items():
    register(Section(key=_key, title=_TITLES[_key], run=_run, render=_render, settings=SETTINGS,
                     estimate_seconds=_ESTIMATES[_key], claims=_claims))

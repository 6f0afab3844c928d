"""Section 3 of Szegedy et al. 2014: do single units carry more meaning than random directions?

The paper shows the held-out images ``x'`` that maximise ``<phi(x), e_i>`` for a unit ``e_i`` of a
layer ``phi`` (Fig. 1) next to those that maximise ``<phi(x), v>`` for a random direction ``v``
(Fig. 2), finds both equally coherent, and concludes that the *space* of activations, not its
individual units, holds the semantic information. That claim rests on pictures alone. This module
shows the pictures and measures the claim over the whole population of directions:

* ``phi(x)`` of any named module of any model, through a forward hook (:func:`layer_activations`);
* directions: the natural basis (every unit) and random directions from several laws (:data:`LAWS`),
  each random direction taken with both signs, since none of them has a preferred one;
* the coherence of each direction, from the labels of its top-k images (purity, label entropy) and
  from the class means of its projection over all images (class selectivity, Morcos et al. 2018);
* units versus each law over the population, pooled over seeds: difference of means, bootstrap CI,
  permutation p-value (:func:`compare`, :func:`summarise`);
* baselines (the ``units`` reproduce section): k random images, the same architecture untrained,
  raw pixels as the "layer".
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from intriguing import data, records, report, reproduce, zoo
from intriguing.errors import IntriguingError, check_images, check_labels, unknown_name_error

UNITS = "units"
LAWS = ("gaussian", "whitened", "rotation")
RANDOM_IMAGES = "random images"
METRICS = ("purity", "entropy", "selectivity")
# +1 where a larger value means a more coherent direction, -1 where a smaller one does.
COHERENT_SIGN = {"purity": 1, "entropy": -1, "selectivity": 1}
# Relative eigenvalue below which a covariance direction counts as "no variance" when whitening.
WHITENING_RTOL = 1e-6


# --------------------------------------------------------------------------------------------
# Activations of a named layer


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (a ``model.named_modules()`` name); an unknown name lists the valid ones."""
    modules = {name: module for name, module in model.named_modules() if name}
    if layer not in modules:
        raise unknown_name_error("layer", layer, modules)
    return modules[layer]


@torch.no_grad()
def layer_activations(model: nn.Module, images: torch.Tensor, layer: str, *, batch_size: int = 1000) -> torch.Tensor:
    """``phi(x)`` for every image: the output of module ``layer``, flattened to (N, d) float32.

    The model runs in eval mode (its mode is restored afterwards) over batches of ``images`` in
    [0, 1]. A convolutional output (N, C, H, W) becomes C*H*W units, one per channel and position.
    """
    check_images(images, "images")
    module = find_layer(model, layer)
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise IntriguingError(
                f"layer {layer!r} outputs a {type(output).__name__}, not a tensor; "
                "choose a module whose output is one tensor"
            )
        outputs.append(output.detach().flatten(1).float())

    handle = module.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size])
            batches += 1
    finally:
        handle.remove()
        model.train(was_training)
    if len(outputs) != batches:
        raise IntriguingError(
            f"layer {layer!r} ran {len(outputs)} times in {batches} forward passes; "
            "choose a layer that runs exactly once per forward pass"
        )
    return torch.cat(outputs)


# --------------------------------------------------------------------------------------------
# Directions


def _rng(seed: int, stream: int) -> np.random.Generator:
    """The random stream for one purpose of one seed: laws and baselines never share draws."""
    if seed < 0:
        raise IntriguingError(f"seed: expected a non-negative integer, got {seed}")
    return np.random.default_rng([seed, stream])


@contextlib.contextmanager
def _single_threaded() -> Iterator[None]:
    """Run torch on one thread: threaded LAPACK on these small (d <= 1000) matrices is slower by orders
    of magnitude than one thread whenever the cores are busy (measured: eigh of 100x100, 0.8 s vs 1 ms)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def whitening_matrix(activations: torch.Tensor) -> torch.Tensor:
    """``W = Cov^{-1/2}`` of the activations, (d, d) float64, restricted to the directions the data varies along.

    Dead units and other null directions have no variance to whiten; they are dropped (pseudo-inverse)
    rather than amplified without bound.
    """
    x = activations.double()
    centred = x - x.mean(0)
    with _single_threaded():
        covariance = centred.T @ centred / max(len(x) - 1, 1)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    keep = eigenvalues > WHITENING_RTOL * eigenvalues.max().clamp_min(torch.finfo(torch.float64).tiny)
    basis = eigenvectors[:, keep]
    return (basis / eigenvalues[keep].sqrt()) @ basis.T


def _haar_rotations(d: int, count: int, rng: np.random.Generator) -> torch.Tensor:
    """The first ``count`` columns of as many independent Haar-random rotations of R^d as needed."""
    columns = []
    with _single_threaded():
        for _ in range(-(-count // d)):
            q, r = torch.linalg.qr(torch.from_numpy(rng.standard_normal((d, d))))
            columns.append(q * torch.sign(torch.diagonal(r)))  # the sign fix makes Q Haar-distributed
    return torch.cat(columns, dim=1)[:, :count]


def random_directions(law: str, activations: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` seeded unit-norm directions (the columns of a (d, count) float32 tensor) drawn from ``law``.

    * ``gaussian``: isotropic Gaussian in activation space, the paper's random direction ``v`` (Sec. 3);
    * ``whitened``: the same in the centred, whitened coordinates ``z = W (phi - mean)``, ``W = Cov^{-1/2}``.
      Since ``<z, g> = <phi, W g> + const``, the direction in activation space is ``W g``: every axis
      of the data then counts equally, instead of the few high-variance ones dominating;
    * ``rotation``: columns of Haar-random rotations of the unit basis (Network Dissection's rotated
      bases). One column has the ``gaussian`` law, but the columns of a rotation are orthogonal, like units.

    ``activations`` (N, d) give the dimension ``d`` and, for ``whitened``, the covariance.
    """
    if law not in LAWS:
        raise unknown_name_error("direction law", law, LAWS)
    if count < 1:
        raise IntriguingError(f"count: expected at least 1 random direction, got {count}")
    d = activations.shape[1]
    rng = _rng(seed, 1 + LAWS.index(law))
    if law == "rotation":
        directions = _haar_rotations(d, count, rng)
    else:
        directions = torch.from_numpy(rng.standard_normal((d, count)))
        if law == "whitened":
            directions = whitening_matrix(activations) @ directions
    return (directions / directions.norm(dim=0)).float()


def both_signs(directions: torch.Tensor) -> torch.Tensor:
    """Each direction ``v`` followed by ``-v`` (as columns ``[v_1 .. v_D, -v_1 .. -v_D]``)."""
    return torch.cat([directions, -directions], dim=1)


# --------------------------------------------------------------------------------------------
# Coherence of each direction


@dataclass
class DirectionMetrics:
    """The coherence of every direction of one family; arrays hold one entry per direction.

    ``top`` (D, k) holds each direction's top-k image indices, best first. ``constant`` marks
    directions whose projection is the same for every image (a dead unit, a blank pixel): they
    have no top-k, so every statistic leaves them out.
    """

    purity: np.ndarray
    entropy: np.ndarray
    selectivity: np.ndarray
    top: np.ndarray
    constant: np.ndarray

    def values(self, metric: str) -> np.ndarray:
        """The ``metric`` of the directions that vary over the images."""
        return getattr(self, metric)[~self.constant]

    def table(self) -> np.ndarray:
        """All :data:`METRICS` of the non-constant directions, (n, len(METRICS))."""
        return np.stack([self.values(metric) for metric in METRICS], axis=1)


def _class_selectivity(rows: torch.Tensor, low: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Morcos et al. (2018)'s class-selectivity index of each direction (rows (D, N)), in [0, 1].

    ``(mu_max - mu_rest) / (mu_max + mu_rest)`` with ``mu_max`` the largest class mean of the
    projection and ``mu_rest`` the mean of the other class means. The index is defined for ReLU units
    (non-negative); a projection on a random direction is not, so each projection is first shifted to
    minimum 0 over the images (``low``). That leaves a ReLU unit that is zero on some image unchanged
    and makes the index blind to the offset that centring adds.
    """
    onehot = torch.nn.functional.one_hot(labels).to(rows.dtype)
    onehot = onehot[:, onehot.sum(0) > 0]  # classes absent from the images have no mean
    means = (rows @ onehot) / onehot.sum(0) - low[:, None]  # (D, C): class means of the shifted projection
    best = means.max(1).values
    rest = (means.sum(1) - best) / (means.shape[1] - 1)
    return ((best - rest) / (best + rest)).double().numpy()


def direction_metrics(scores: torch.Tensor, labels: torch.Tensor, k: int) -> DirectionMetrics:
    """Top-k purity, top-k label entropy (bits) and class selectivity of every column of ``scores``.

    ``scores`` (N, D) holds the projections ``<phi(x), d>`` of N images on D directions. Purity is the
    share of the majority label among a direction's top-k images (1: all the same digit); entropy is
    the Shannon entropy of their labels (0: all the same digit). Ties in the ranking (e.g. a ReLU
    unit that is zero on many images) are broken by ``torch.topk``, deterministically.
    """
    rows = scores.T.contiguous()  # (D, N): every reduction below runs along contiguous memory
    low, high = torch.aminmax(rows, dim=1)
    top = rows.topk(k, dim=1).indices  # (D, k)
    counts = torch.nn.functional.one_hot(labels[top]).sum(1).double()  # (D, classes)
    shares = counts / k
    entropy = -(shares * torch.log2(shares.clamp_min(1e-300))).sum(1)
    return DirectionMetrics(
        purity=(counts.max(1).values / k).numpy(),
        entropy=entropy.clamp_min(0.0).numpy(),
        selectivity=_class_selectivity(rows, low, labels),  # NaN for constant directions
        top=top.numpy(),
        constant=(low == high).numpy(),
    )


@dataclass
class LayerAnalysis:
    """One layer under one seed: the metrics of its units, of every random law and of random images."""

    layer: str
    seed: int
    k: int
    directions: int  # random draws per law; each is used with both signs
    units: int
    families: dict[str, DirectionMetrics]


def _check_analysis_inputs(activations: torch.Tensor, labels: torch.Tensor, k: int, directions: int) -> None:
    if not isinstance(activations, torch.Tensor) or activations.dim() != 2 or not activations.is_floating_point():
        got = tuple(activations.shape) if isinstance(activations, torch.Tensor) else type(activations).__name__
        raise IntriguingError(f"activations: expected a floating-point (N, d) tensor, one row per image, got {got}")
    if not torch.isfinite(activations).all():
        raise IntriguingError("activations: contain NaN or infinite values; check the model's weights")
    n = len(activations)
    check_labels(labels, "labels", n)
    if labels.min() < 0:
        raise IntriguingError(f"labels: class indices must be non-negative, got {int(labels.min())}")
    if len(labels.unique()) < 2:
        raise IntriguingError("labels: need images of at least 2 classes to measure coherence")
    if not 1 <= k < n:
        raise IntriguingError(f"k: expected 1 <= k < {n} (the number of images), got {k}")
    if directions < 1:
        raise IntriguingError(f"directions: expected at least 1 random direction per law, got {directions}")


def analyse_activations(
    activations: torch.Tensor,
    labels: torch.Tensor,
    *,
    k: int = 8,
    directions: int = 200,
    seed: int = 0,
    laws: Sequence[str] = LAWS,
    layer: str = "activations",
) -> LayerAnalysis:
    """Metrics of every unit, of ``directions`` random directions per law (both signs) and of random images.

    The random-images family ranks images by noise independent of them: its top-k is k random
    images, the chance level every selection of images is measured against.
    """
    _check_analysis_inputs(activations, labels, k, directions)
    activations = activations.float()
    families = {UNITS: direction_metrics(activations, labels, k)}
    if families[UNITS].constant.all():
        raise IntriguingError(f"layer {layer!r}: every unit is constant over the images; nothing to rank")
    for law in laws:
        signed = both_signs(random_directions(law, activations, directions, seed))
        families[law] = direction_metrics(activations @ signed, labels, k)
    noise = torch.from_numpy(_rng(seed, 0).standard_normal((len(activations), 2 * directions), dtype=np.float32))
    families[RANDOM_IMAGES] = direction_metrics(noise, labels, k)
    return LayerAnalysis(layer=layer, seed=seed, k=k, directions=directions, units=activations.shape[1],
                         families=families)


def analyse(model: nn.Module, layer: str, images: torch.Tensor, labels: torch.Tensor, **kwargs: Any) -> LayerAnalysis:
    """:func:`analyse_activations` of ``model``'s layer ``layer`` on ``images`` (N, 1, 28, 28) in [0, 1]."""
    return analyse_activations(layer_activations(model, images, layer), labels, layer=layer, **kwargs)


# --------------------------------------------------------------------------------------------
# Population statistics


@dataclass
class Difference:
    """Mean of units minus mean of another family, averaged over seeds, with its uncertainty.

    ``ci_low``/``ci_high``: percentile bootstrap CI (directions resampled within each seed);
    ``p_value``: two-sided permutation test (family labels shuffled within each seed).
    ``seed_differences`` shows the spread between seeds that the CI does not cover.
    """

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    seed_differences: list[float]


def _canonical(values: np.ndarray | Sequence[float]) -> np.ndarray:
    """Values as an (n, m) float64 matrix (one row per direction) in lexicographic row order.

    Resampling a canonical order makes every statistic a function of the *set* of directions:
    relabelling (permuting) units cannot change a single digit of the result.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[:, None] if x.ndim == 1 else x
    return x[np.lexsort(x.T[::-1])]


def _resampled_differences(a: np.ndarray, b: np.ndarray, resamples: int,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap and permutation replicates of ``mean(a) - mean(b)``, each (resamples, m).

    Bootstrap: rows of ``a`` and of ``b`` resampled with replacement. Permutation: which pooled rows
    count as ``a`` reshuffled, as a 0/1 membership matrix so that the means are one matmul. The work
    runs in chunks of resamples only to bound memory.
    """
    pooled = np.concatenate([a, b])
    n = len(pooled)
    membership = np.arange(n) < len(a)
    boot, permuted = [], []
    chunk = max(1, 2**22 // (n * a.shape[1]))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        boot.append(a[rng.integers(0, len(a), (size, len(a)))].mean(1)
                    - b[rng.integers(0, len(b), (size, len(b)))].mean(1))
        first = rng.permuted(np.broadcast_to(membership, (size, n)), axis=1).astype(np.float64) @ pooled
        permuted.append(first / len(a) - (pooled.sum(0) - first) / len(b))
    return np.concatenate(boot), np.concatenate(permuted)


def compare(
    units: Sequence[np.ndarray],
    other: Sequence[np.ndarray],
    *,
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> list[Difference]:
    """Difference of means ``units - other`` with bootstrap CI and permutation p-value, pooled over seeds.

    ``units`` and ``other`` hold one array per seed: shape (n,) for one metric, or (n, m) for m
    metrics compared at once on the same resampled directions; one :class:`Difference` per metric.
    The per-seed differences are averaged, and so are their resampled replicates.
    """
    if len(units) != len(other) or not units:
        raise IntriguingError(f"compare: expected one array per seed on both sides, got {len(units)} and {len(other)}")
    pairs = [(_canonical(a), _canonical(b)) for a, b in zip(units, other)]
    metrics = pairs[0][0].shape[1]
    if any(len(a) == 0 or len(b) == 0 or a.shape[1] != metrics or b.shape[1] != metrics for a, b in pairs):
        raise IntriguingError("compare: every seed needs at least one value on each side, with the same metrics")
    if resamples < 1 or not 0 < level < 1:
        raise IntriguingError(f"compare: expected resamples >= 1 and 0 < level < 1, got {resamples} and {level}")
    rng = np.random.default_rng(seed)
    observed = np.array([a.mean(0) - b.mean(0) for a, b in pairs])  # (seeds, m)
    replicates = [_resampled_differences(a, b, resamples, rng) for a, b in pairs]
    boot = np.mean([r[0] for r in replicates], axis=0)  # (resamples, m)
    permuted = np.mean([r[1] for r in replicates], axis=0)
    difference = observed.mean(0)
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    # The tolerance counts a permuted split equal to the observed one as "as extreme" despite rounding.
    extreme = (np.abs(permuted) >= np.abs(difference) - 1e-12).sum(0)
    return [
        Difference(
            difference=float(difference[j]),
            ci_low=float(low[j]),
            ci_high=float(high[j]),
            p_value=float((1 + extreme[j]) / (resamples + 1)),
            seed_differences=observed[:, j].tolist(),
        )
        for j in range(len(difference))
    ]


@dataclass(kw_only=True)
class Comparison(Difference):
    """Units versus one family on one metric (pooled over seeds), with its verdict.

    ``verdict`` reads the difference in the direction of coherence (higher purity and selectivity,
    lower entropy): "units more coherent" or "units less coherent" when the CI excludes 0 and
    p < 1 - level, otherwise "no significant difference".
    """

    metric: str
    family: str
    units_mean: float
    family_mean: float
    verdict: str


def verdict(metric: str, difference: Difference, level: float = 0.95) -> str:
    """Whether units are more or less coherent than the other family on ``metric``, or neither.

    See :class:`Comparison` for the rule."""
    sign = COHERENT_SIGN[metric]
    low, high = sorted((sign * difference.ci_low, sign * difference.ci_high))
    if difference.p_value < 1 - level and low > 0:
        return "units more coherent"
    if difference.p_value < 1 - level and high < 0:
        return "units less coherent"
    return "no significant difference"


@dataclass
class FamilySummary:
    """One family over all seeds: how many directions, their mean metrics, the purity distribution.

    ``purity_levels[j - 1]`` is the share of directions whose top-k holds j images of one label.
    """

    family: str
    directions: int
    constant: int
    means: dict[str, float]
    purity_levels: list[float]


@dataclass
class UnitStudy:
    """One layer of one model over several seeds: every family's summary, and units versus each family."""

    model: str
    layer: str
    variant: str  # "trained", "untrained" or "pixels"
    k: int
    directions: int
    units: int
    seeds: list[int]
    families: list[FamilySummary]
    comparisons: list[Comparison]

    def comparison(self, family: str, metric: str = "purity") -> Comparison:
        return next(c for c in self.comparisons if c.family == family and c.metric == metric)


def _mean(values: Sequence[float]) -> float:
    """The mean with an exactly rounded sum (``math.fsum``): the same digits in any order of the values."""
    return math.fsum(values) / len(values)


def _family_summary(family: str, metrics: Sequence[DirectionMetrics], k: int) -> FamilySummary:
    purity = np.concatenate([m.values("purity") for m in metrics])
    levels = np.bincount(np.rint(purity * k).astype(int), minlength=k + 1)[1:] / len(purity)
    return FamilySummary(
        family=family,
        directions=len(purity),
        constant=int(sum(m.constant.sum() for m in metrics)),
        means={metric: _mean(np.concatenate([m.values(metric) for m in metrics])) for metric in METRICS},
        purity_levels=levels.tolist(),
    )


def summarise(
    analyses: Sequence[LayerAnalysis],
    *,
    model: str,
    variant: str = "trained",
    resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> UnitStudy:
    """Pool one layer's analyses (one per seed) into a :class:`UnitStudy`: units versus every family."""
    first = analyses[0]
    if any(a.layer != first.layer or a.k != first.k or set(a.families) != set(first.families) for a in analyses):
        raise IntriguingError("summarise: the analyses must share their layer, k and direction families")
    families = list(first.families)
    comparisons = []
    for family in families[1:]:
        differences = compare([a.families[UNITS].table() for a in analyses],
                              [a.families[family].table() for a in analyses],
                              resamples=resamples, seed=seed, level=level)
        for metric, difference in zip(METRICS, differences):
            comparisons.append(Comparison(
                **dataclasses.asdict(difference), metric=metric, family=family,
                units_mean=_mean([_mean(a.families[UNITS].values(metric)) for a in analyses]),
                family_mean=_mean([_mean(a.families[family].values(metric)) for a in analyses]),
                verdict=verdict(metric, difference, level),
            ))
    return UnitStudy(
        model=model, layer=first.layer, variant=variant, k=first.k, directions=first.directions,
        units=first.units, seeds=[a.seed for a in analyses],
        families=[_family_summary(f, [a.families[f] for a in analyses], first.k) for f in families],
        comparisons=comparisons,
    )


def format_study(study: UnitStudy) -> list[str]:
    """A few lines for a terminal: the units' means, then units versus each family on purity."""
    units = study.families[0]
    lines = [
        f"{study.model} / {study.layer} ({study.variant}, seeds {study.seeds}, k={study.k}): "
        f"{units.directions} units ({units.constant} constant, left out), "
        f"2x{study.directions} directions per law",
        "  units: " + ", ".join(f"{m} {units.means[m]:.3f}" for m in METRICS),
    ]
    for c in study.comparisons:
        if c.metric == "purity":
            lines.append(
                f"  vs {c.family:<13} purity {c.family_mean:.3f}: difference {c.difference:+.3f} "
                f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}], p={c.p_value:.4f} -> {c.verdict}"
            )
    return lines


# --------------------------------------------------------------------------------------------
# Figures


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported late: only figures need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def figure_rows(metrics: DirectionMetrics, rows: int) -> list[int]:
    """The fixed rule picking a figure's directions: the first ``rows`` non-constant ones, never hand-picked.

    For units these are the first units; for a random law, the first draws of its seeded sample
    (positive signs come first, see :func:`both_signs`).
    """
    return np.flatnonzero(~metrics.constant)[:rows].tolist()


def _mosaic(images: torch.Tensor, top: np.ndarray, gap: int = 2) -> np.ndarray:
    """Tile the top-k images of each chosen direction: one row per direction, best image first."""
    rows, k = top.shape
    h, w = images.shape[-2:]
    tiles = images[torch.from_numpy(top).flatten(), 0].numpy().reshape(rows, k, h, w)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, gap), (0, gap)), constant_values=0.5)  # grey gaps
    return tiles.transpose(0, 2, 1, 3).reshape(rows * (h + gap), k * (w + gap))[:-gap, :-gap]


def save_grid(
    path: str | Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    analysis: LayerAnalysis,
    families: Sequence[str] = (UNITS, "gaussian"),
    rows: int = 4,
    title: str = "",
) -> Path:
    """Figs 1-2 of the paper for one layer: per family a panel whose rows are directions chosen by
    :func:`figure_rows` and whose columns are their top-k images, each tagged with its label."""
    plt = _pyplot()
    k = analysis.k
    fig, axes = plt.subplots(1, len(families), figsize=(len(families) * (0.55 * k + 1.6), 0.6 * rows + 1.0),
                             squeeze=False)
    h = images.shape[-2] + 2
    for ax, family in zip(axes[0], families):
        metrics = analysis.families[family]
        chosen = figure_rows(metrics, rows)
        ax.imshow(_mosaic(images, metrics.top[chosen]), cmap="gray", vmin=0, vmax=1)
        noun = "unit" if family == UNITS else "direction"
        ax.set_yticks([r * h + h / 2 - 1 for r in range(len(chosen))],
                      [f"{noun} {i}\npurity {metrics.purity[i]:.2f}" for i in chosen], fontsize=7)
        ax.set_xticks([])
        ax.set_title(f"{family} (top {k})", fontsize=9)
        for r, i in enumerate(chosen):
            for c in range(k):
                ax.text(c * h + 1, r * h + 6, str(int(labels[metrics.top[i, c]])), color="yellow", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def save_purity_distributions(path: str | Path, studies: Sequence[UnitStudy]) -> Path:
    """The purity distribution of units, of every random law and of random images, one panel per study."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(studies), figsize=(3.6 * len(studies), 3.0), squeeze=False, sharey=True)
    for ax, study in zip(axes[0], studies):
        levels = np.arange(1, study.k + 1) / study.k
        for summary in study.families:
            style = {"linewidth": 2.5, "color": "black"} if summary.family == UNITS else {"linewidth": 1.2}
            ax.plot(levels, summary.purity_levels, marker="o", markersize=3, label=summary.family, **style)
        ax.set_title(f"{study.model} / {study.layer} ({study.variant})", fontsize=9)
        ax.set_xlabel(f"top-{study.k} purity")
    axes[0][0].set_ylabel("share of directions")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def slug(*parts: str) -> str:
    """A file-name-safe name from parts such as a model and a layer name ("FC100-100-10", "h1")."""
    return "-".join("".join(ch if ch.isalnum() or ch in "-." else "_" for ch in p) for p in parts)


def study_model(
    model: nn.Module,
    layer: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    out: str | Path,
    *,
    model_name: str = "model",
    k: int = 8,
    directions: int = 200,
    seed: int = 0,
    resamples: int = 2000,
) -> UnitStudy:
    """Analyse one layer of one model and write ``units.json`` (study + per-direction metrics) and the
    figures (top-k grid, purity distributions) into ``out``: the library side of ``intriguing units``."""
    analysis = analyse(model, layer, images, labels, k=k, directions=directions, seed=seed)
    study = summarise([analysis], model=model_name, resamples=resamples, seed=seed)
    out = Path(out)
    grid = save_grid(out / "grid.png", images, labels, analysis, title=f"{model_name} / {layer}")
    distributions = save_purity_distributions(out / "purity.png", [study])
    records.write_json(out / "units.json", {
        "config": {"model": model_name, "layer": layer, "k": k, "directions": directions, "seed": seed,
                   "resamples": resamples, "images": len(images)},
        "study": study,
        "analysis": analysis,
        "figures": [grid.name, distributions.name],
        "environment": records.environment(),
    })
    return study


# --------------------------------------------------------------------------------------------
# The reproduce section


@dataclass(frozen=True)
class StudySettings:
    """What the ``units`` section runs: which layers, seeds and sizes (one entry per preset)."""

    layers: tuple[tuple[str, str], ...] = (("ConvNet", "features"), ("FC100-100-10", "h1"), ("FC100-100-10", "h2"))
    seeds: tuple[int, ...] = (0, 1, 2)
    k: int = 8
    directions: int = 500
    resamples: int = 2000
    images: int | None = None  # the first N test images; None: all 10,000
    train_limit: int | None = None  # quick models (smoke): train on the first N images only...
    train_overrides: dict[str, Any] = field(default_factory=dict)  # ...with these recipe fields replaced
    stats_seed: int = 0


def untrained(name: str, seed: int) -> nn.Module:
    """Zoo model ``name`` initialised as :func:`intriguing.training.train` initialises it under ``seed``
    (``torch.manual_seed(seed)``, then build): the very weights its training starts from."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return zoo.build(name).eval()


def _run_section(ctx: reproduce.Context, settings: StudySettings, _results: dict[str, Any]) -> dict[str, Any]:
    images, labels = data.load_mnist("test", ctx.data_dir)
    images, labels = images[: settings.images], labels[: settings.images]
    options = {"k": settings.k, "directions": settings.directions}
    models = list(dict.fromkeys(model for model, _ in settings.layers))
    analyses: dict[tuple[str, str, str], list[LayerAnalysis]] = {}
    for step, (name, seed) in enumerate((name, seed) for name in models for seed in settings.seeds):
        ctx.stage(f"units: {name} seed {seed}", 0.8 * step / (len(models) * len(settings.seeds)))
        trained = zoo.trained(name, seed=seed, limit=settings.train_limit,
                              overrides=settings.train_overrides or None, data_dir=ctx.data_dir,
                              cache=ctx.cache, progress=ctx.progress)
        for variant, model in (("trained", trained), ("untrained", untrained(name, seed))):
            for layer in (layer for model_name, layer in settings.layers if model_name == name):
                analyses.setdefault((name, layer, variant), []).append(
                    analyse(model, layer, images, labels, seed=seed, **options))
    analyses[("raw pixels", "pixels", "pixels")] = [
        analyse_activations(images.flatten(1), labels, seed=seed, layer="pixels", **options) for seed in settings.seeds
    ]
    ctx.stage("units: statistics and figures", 0.8)
    studies = [summarise(found, model=name, variant=variant, resamples=settings.resamples, seed=settings.stats_seed)
               for (name, _, variant), found in analyses.items()]
    grids = [
        save_grid(ctx.figures / f"units-{slug(name, layer)}.png", images, labels, found[0],
                  title=f"{name} / {layer}, seed {found[0].seed}").name
        for (name, layer, variant), found in analyses.items() if variant == "trained"
    ]
    distribution = save_purity_distributions(
        ctx.figures / "units-purity.png", [s for s in studies if s.variant == "trained"]).name
    return {"settings": settings, "studies": studies, "grids": grids, "distribution": distribution}


def _study_from_json(raw: dict[str, Any]) -> UnitStudy:
    raw = dict(raw)
    raw["families"] = [FamilySummary(**f) for f in raw["families"]]
    raw["comparisons"] = [Comparison(**c) for c in raw["comparisons"]]
    return UnitStudy(**raw)


def _studies(result: dict[str, Any], variant: str | None = "trained") -> list[UnitStudy]:
    """The section's studies of one variant ("trained"), or the baselines (``None``)."""
    studies = [_study_from_json(s) for s in result["studies"]]
    return [s for s in studies if (s.variant == variant if variant else s.variant != "trained")]


def _interval(c: Comparison) -> str:
    return f"{c.difference:+.3f} ({c.ci_low:+.3f} to {c.ci_high:+.3f})"


def _label(study: UnitStudy) -> str:
    return {"trained": study.model, "untrained": f"{study.model}, untrained"}.get(study.variant, study.model)


def _verdict_table(studies: Sequence[UnitStudy]) -> str:
    rows = []
    for study in studies:
        for family in [*LAWS, RANDOM_IMAGES]:
            purity = study.comparison(family)
            rows.append([
                _label(study), study.layer, family, f"{purity.units_mean:.3f}", f"{purity.family_mean:.3f}",
                _interval(purity), f"{purity.p_value:.4f}", _interval(study.comparison(family, "entropy")),
                _interval(study.comparison(family, "selectivity")), f"**{purity.verdict}**",
            ])
    return report.table(["model", "layer", "units versus", "units purity", "their purity", "Δ purity (95% CI)",
                         "p", "Δ entropy, bits (95% CI)", "Δ selectivity (95% CI)", "verdict (purity)"], rows)


def _render_section(result: dict[str, Any], ctx: reproduce.Context) -> str:
    settings = result["settings"]
    trained = _studies(result)
    dead = ", ".join(f"{s.model}/{s.layer} {s.families[0].constant}" for s in trained)
    figures = "\n\n".join(f"![top-k images](figures/{name})" for name in result["grids"])
    return f"""\
**Paper (Sec. 3, Figs 1-2).** The images that most activate a single unit look no more semantically
coherent than those that most activate a random direction: the space, not the unit, carries meaning.

**Ours.** For every unit and for {settings['directions']} random directions per law (each with both signs)
we take the top-{settings['k']} of {settings['images'] or "all 10,000"} MNIST test images by `<phi(x), d>`, and
score each direction by the label purity and label entropy of its top-k and by the class-selectivity index
of its projection over all images (Morcos et al. 2018, projection shifted to minimum 0). Laws: *gaussian*
(isotropic in activation space, the paper's), *whitened* (isotropic after centring and whitening the
activations), *rotation* (columns of random rotations of the unit basis); *random images* (k images drawn
at random) is the chance level. Δ = units minus the other family, averaged over seeds {settings['seeds']};
95% percentile bootstrap CI (directions resampled within each seed, {settings['resamples']} resamples) and
two-sided permutation p-value. Constant (dead) units are left out (per layer, all seeds: {dead}). Verdict:
the purity CI excludes 0 and p < 0.05; each row is one test, so read p near 0.05 with care.

{_verdict_table(trained)}

How to read it: projections on *gaussian* and *rotation* directions are dominated by the few
high-variance directions of the activations, which a trained net makes class-discriminative; *whitened*
directions weigh every direction of the activations' span equally, low-variance ones included. The
selectivity index favours sparse non-negative codes (ReLU units, pixels) over dense projections whatever
they encode; the baseline rows below show how large a gap architecture alone produces.

**Baselines.** The same architectures untrained (the very weights training starts from), and raw pixels
as the "layer" (each pixel a unit):

{_verdict_table(_studies(result, None))}

Top-{settings['k']} images of the first units (left) and of the first directions of the seeded Gaussian
draw (right), seed {settings['seeds'][0]}, chosen by that fixed rule, not by hand; the yellow digit is the label:

{figures}

Distribution of top-{settings['k']} purity per family, trained nets, all seeds:

![purity distributions](figures/{result['distribution']})

**Summary.** Trained nets: {_tally(trained)}. Untrained nets and raw pixels: {_tally(_studies(result, None))}.
"""


def _tally(studies: Sequence[UnitStudy]) -> str:
    """Per family, how many of ``studies`` find units more / less coherent (top-k purity), with the Δ range."""
    parts = []
    for family in [*LAWS, RANDOM_IMAGES]:
        found = [s.comparison(family) for s in studies]
        counts = {v: sum(c.verdict == v for c in found) for v in ("units more coherent", "units less coherent")}
        parts.append(f"versus {family}, units are more coherent in {counts['units more coherent']} and less "
                     f"coherent in {counts['units less coherent']} of {len(found)} layers "
                     f"(Δ purity {min(c.difference for c in found):+.3f} to {max(c.difference for c in found):+.3f})")
    return "; ".join(parts)


def _claims(result: dict[str, Any]) -> list[reproduce.Claim]:
    """Sec. 3's claim, once for the paper's law and once for the other laws: it fails wherever units are
    significantly more coherent (top-k purity) than random directions in some layer."""
    trained = _studies(result)
    claims = []
    for laws, statement in (
        (("gaussian",), "Single units are no more semantically coherent than random (isotropic Gaussian) "
                        "directions (Sec. 3, Figs 1-2): top-k label purity"),
        (LAWS[1:], "Nor are they more coherent than other random directions: whitened Gaussian, columns of "
                   "random rotations (our extension of Sec. 3): top-k label purity"),
    ):
        found = [(s, s.comparison(law)) for s in trained for law in laws]
        better = [f"{s.model}/{s.layer} vs {c.family}" for s, c in found if c.verdict == "units more coherent"]
        evidence = "; ".join(f"{s.model}/{s.layer} vs {c.family}: units {c.units_mean:.3f}, directions "
                             f"{c.family_mean:.3f}, Δ {_interval(c)}, p={c.p_value:.4f}" for s, c in found)
        verdict = (f"units more coherent in {len(better)} of {len(found)}" if better
                   else f"units not more coherent in any of {len(found)}")
        claims.append(reproduce.Claim("units", statement, not better, f"{verdict} (layer x law): {evidence}."))
    return claims


SECTION = reproduce.register(
    reproduce.Section(
        key="units",
        title="Units versus random directions (Section 3, Figs 1-2)",
        run=_run_section,
        render=_render_section,
        settings=reproduce.preset_settings(
            # Smoke: the FC net only (the quick model the transfer section's smoke run shares from the cache).
            smoke=StudySettings(layers=(("FC100-100-10", "h1"), ("FC100-100-10", "h2")), seeds=(0,), directions=20,
                                resamples=200, images=1000, train_limit=1000,
                                train_overrides={"epochs": 3, "batch_size": 32, "pretrain_epochs": 1}),
            default=StudySettings(),
            full=StudySettings(seeds=(0, 1, 2, 3, 4), directions=2000, resamples=10000),
        ),
        estimate_seconds={"smoke": 6, "default": 150, "full": 900},
        claims=_claims,
    )
)

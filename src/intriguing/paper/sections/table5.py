"""Report section ``table5``: Table 5's layer-wise Lipschitz bounds (Section 4.3).

AlexNet (seeded random weights: no ImageNet weights ship with the toolkit) is bounded layer by
layer beside the paper's published bounds for the trained network; each MNIST zoo model is bounded
too, with the product of its layer bounds set against empirical lower bounds on its Lipschitz
constant (input gradients over test images, and adversarial pairs found by L-BFGS).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from intriguing import alexnet
from intriguing.attacks import LBFGSConfig
from intriguing.paper.tables import paper
from intriguing.records import to_jsonable
from intriguing.report import table
from intriguing.runner import Claim, Context, Section, Units, preset_settings, work
from intriguing.runner.section import SANITY

KEY = "table5"


@dataclass(frozen=True)
class Table5Settings:
    """One preset's configuration of the ``table5`` section (hashed: a change recomputes it).

    ``alexnet``: bound the seeded random AlexNet (tens of seconds); ``models``: MNIST zoo models,
    trained on the full training set with ``seed`` (``limit`` / ``overrides`` shrink training for
    quick presets); ``images``: test images for the gradient lower bound; ``pairs``: test images
    attacked (untargeted, with ``attack``) for adversarial pairs; ``tol``: Lanczos tolerance of the
    exact norms.
    """

    alexnet: bool
    models: tuple[str, ...] = ("FC100-100-10", "ConvNet")
    images: int = 1000
    pairs: int = 100
    limit: int | None = None
    overrides: dict[str, Any] | None = None
    attack: LBFGSConfig = field(default_factory=LBFGSConfig.refined)
    tol: float = 1e-5
    seed: int = 0


SETTINGS = preset_settings(
    # Smoke: the FC net only, trained as the other sections' smoke runs train it (shared from the cache).
    smoke=Table5Settings(alexnet=False, models=("FC100-100-10",), images=200, pairs=20, limit=1000,
                         overrides={"epochs": 3, "batch_size": 32, "pretrain_epochs": 1},
                         attack=LBFGSConfig.refined(max_solves=10, max_iter=50)),
    default=Table5Settings(alexnet=True),
    full=Table5Settings(alexnet=True, models=("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10",
                                              "AE400-10", "ConvNet"), images=10_000, pairs=1000),
)


def run(ctx: Context, s: Table5Settings, results: dict[str, Any]) -> dict[str, Any]:
    """AlexNet's table (random weights) beside the paper's, then each MNIST model's with its lower bounds."""
    result: dict[str, Any] = {
        "paper": paper(KEY)["rows"], "alexnet": None, "mnist": [],
        "protocol": {"alexnet_weights": f"random: PyTorch's default initialisation, seed {s.seed}",
                     "mnist_training": {"limit": s.limit, "overrides": s.overrides, "on": "train", "seed": s.seed},
                     "gradient_images": f"first {s.images} test images", "pairs": f"first {s.pairs} test images, "
                     f"untargeted LBFGS {_changed(s.attack)}", "tol": s.tol},
    }
    tables = ctx.map_units(units(ctx, s), "networks attacked and bounded")
    result["alexnet"] = tables[0] if s.alexnet else None
    result["mnist"] = tables[1:] if s.alexnet else tables
    return to_jsonable(result)


def units(ctx: Context, s: Table5Settings) -> Units:
    """One unit of work per network, AlexNet first: they need only the trained models, so the runner runs
    them ahead (the section's ``ahead``)."""
    specs = [work.BoundNetwork(None, tol=s.tol, seed=s.seed)] if s.alexnet else []
    specs += [work.BoundNetwork(model, images=s.images, pairs=s.pairs, attack=s.attack, tol=s.tol, seed=s.seed)
              for model in trained_models(ctx, s)]
    return Units(work.bound_network, tuple(specs))


def trained_models(ctx: Context, s: Table5Settings) -> list[work.TrainModel]:
    """The MNIST models bounded, as units of work name them (the section's ``models``)."""
    return [work.TrainModel.of(name, seed=s.seed, limit=s.limit, overrides=s.overrides, data_dir=ctx.data_dir,
                               cache=ctx.cache) for name in s.models]


def _changed(config: LBFGSConfig) -> dict[str, Any]:
    """The attack's hyper-parameters that differ from the defaults (``LBFGSConfig.refined()``)."""
    default = LBFGSConfig.refined()
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
            if getattr(config, f.name) != getattr(default, f.name)}


def paper_bounds(rows: list[dict[str, Any]] | None = None) -> dict[str, float]:
    """The paper's Table 5 upper bounds (trained AlexNet) by our AlexNet's layer names (``conv1`` ... ``fc3``).

    ``rows`` are Table 5's rows as stored with a result (default: the shipped copy of the paper's).
    """
    rows = paper(KEY)["rows"] if rows is None else rows
    return {name: row["upper_bound"] for name, row in zip(alexnet.TABLE5_LAYERS, rows)}


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.5g}"


def _lower_bound(document: dict[str, Any]) -> float | None:
    found = [b for b in (document["gradient_lower_bound"], document["pair_lower_bound"]) if b is not None]
    return max(found) if found else None


def layers_markdown(document: dict[str, Any], published: dict[str, float] | None = None) -> str:
    """A :class:`~intriguing.spectral.SpectralTable` (as JSON) as a Markdown table.

    ``published`` (e.g. :func:`paper_bounds`) adds the paper's bounds as a column, by layer name.
    """
    header = ["layer", "kind", "size", "stride", "in → out"]
    header += ["paper's bound (trained)"] if published is not None else []
    header += ["our bound", "exact norm", "bound / exact"]
    rows = []
    for layer in document["layers"]:
        shapes = f"{'x'.join(map(str, layer['input_shape']))} → {'x'.join(map(str, layer['output_shape']))}"
        stride = layer["stride"]
        stride = "—" if stride is None else "x".join(map(str, stride)) if isinstance(stride, list) else str(stride)
        row = [f"`{layer['name']}`", layer["kind"], layer["size"], stride, shapes]
        row += [_number(published.get(layer["name"]))] if published is not None else []
        row += [_number(layer["bound"]), _number(layer["exact"]), f"{layer['ratio']:.4f}"]
        rows.append(row)
    product = (f"Product of the bounds **{_number(document['product_bound'])}**; of the exact norms "
               f"**{_number(document['product_exact'])}**.")
    return table(header, rows) + "\n\n" + product


def render(result: dict[str, Any], ctx: Context) -> str:
    """The method, AlexNet's table beside the paper's, then the MNIST models with their lower bounds."""
    introduction = (
        "Section 4.3 bounds every layer by an operator norm: ours are the paper's Fourier formula (stride-aware, "
        "evaluated so that it bounds the layer with its own padding), next to the exact norm of the layer as "
        "implemented (Lanczos through `conv2d` / `conv_transpose2d`). The bound is never below the exact norm; their "
        "ratio shows how much zero padding loosens it. Max pooling with overlapping 3x3 windows of stride 2 is "
        "2-Lipschitz, not 1; local response normalisation is `k^-beta` = 0.59."
    )
    return "\n\n".join([introduction, _alexnet_markdown(result), _mnist_markdown(result["mnist"])]).strip()


def _alexnet_markdown(result: dict[str, Any]) -> str:
    """Table 5: the paper's bounds for the trained network beside ours for random weights."""
    if result["alexnet"] is None:
        return "AlexNet (Table 5 itself) is bounded in the `default` and `full` presets only."
    return "\n\n".join([
        "### AlexNet (Krizhevsky et al. 2012), the paper's Table 5",
        "**Our weights are random** (seeded; no ImageNet weights ship with this toolkit), so our values differ from "
        "the paper's, which are those of the trained network: what is comparable is the method, not the numbers. "
        "`intriguing lipschitz alexnet --weights FILE` applies it to trained weights.",
        layers_markdown(result["alexnet"], paper_bounds(result["paper"])),
    ])


def _mnist_markdown(tables: list[dict[str, Any]]) -> str:
    """Each MNIST model's layers, then how far its product bound is from what the network does."""
    if not tables:
        return ""
    parts = ["### The MNIST models"]
    for document in tables:
        parts += [f"**{document['model']}**", layers_markdown(document)]
    header = ["model", "product of bounds", "product of exact norms", "max ‖∂f/∂x‖ over data",
              "max ‖f(x′)−f(x)‖/‖x′−x‖ over adversarial pairs", "product of bounds / best lower bound"]
    rows = [[t["model"], _number(t["product_bound"]), _number(t["product_exact"]),
             f"{_number(t['gradient_lower_bound'])} ({t['images']} images)",
             f"{_number(t['pair_lower_bound'])} ({t['pairs']} pairs)",
             _number(t["product_bound"] / _lower_bound(t)) if _lower_bound(t) else "—"] for t in tables]
    parts += ["How loose the product is: the network's Lipschitz constant lies between the largest lower bound "
              "(data gradients, adversarial pairs) and the product of the exact norms.", table(header, rows)]
    return "\n\n".join(parts)


# Relative rounding allowed between a bound and what it bounds where both are the same number computed two
# ways: a convolution's Fourier bound and its Lanczos norm; one linear layer's norm (Lanczos, the map run in
# float32) and the norm of its Jacobian (the float32 weights, in float64). The full preset's FC10(1) had
# 0.36702949683530217 against 0.36702949802766316.
ROUNDING = 1e-6


def claims(result: dict[str, Any]) -> list[Claim]:
    """Section 4.3's guarantees, checked on our numbers: the Fourier formula bounds each convolution; the
    product bounds the network. They are sanity checks (:data:`SANITY`), not findings about the paper."""
    tables = [t for t in (result["alexnet"], *result["mnist"]) if t is not None]
    convolutions = [layer for t in tables for layer in t["layers"] if layer["kind"].startswith("Conv2d")]
    found = []
    if convolutions:
        worst = min(layer["bound"] / layer["exact"] for layer in convolutions)
        found.append(Claim(
            KEY, "Section 4.3: the Fourier formula upper-bounds the operator norm of each convolution",
            holds=worst >= 1 - ROUNDING, kind=SANITY,
            evidence=f"{len(convolutions)} convolutions; smallest bound / exact norm {worst:.4f}"))
    measured = [t for t in result["mnist"] if _lower_bound(t) is not None]
    if measured:
        found.append(Claim(
            KEY, "Section 4.3: the product of the layers' bounds bounds the network's instability",
            holds=all(t["product_bound"] >= (1 - ROUNDING) * _lower_bound(t) for t in measured), kind=SANITY,
            evidence="; ".join(f"{t['model']}: product {_number(t['product_bound'])} ≥ lower bound "
                               f"{_number(_lower_bound(t))}" for t in measured)))
    return found


SECTION = Section(
    key=KEY, title="Table 5: layer-wise Lipschitz bounds (Section 4.3)", run=run, render=render,
    settings=SETTINGS, claims=claims, estimate_seconds={"smoke": 5, "default": 80, "full": 900},
    models=trained_models, ahead=lambda ctx, s: [units(ctx, s)],
)

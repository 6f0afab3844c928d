"""Report section ``lipschitz_gap``: how loose is the paper's product bound? (Sec. 4.3)

Szegedy et al. (2014, Sec. 4.3) bound a network's instability by the product of its layers'
operator norms. Between that product and the true global Lipschitz constant lies LipSDP-Neuron
(Fazlyab et al. 2019), a certified upper bound that accounts for how layers interact; below the
true constant lies the largest Jacobian norm seen on test images (an empirical lower bound). The
three show how much of the product's gap to the lower bound is looseness of the bound.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from intriguing import data
from intriguing.report.markdown import table
from intriguing.runner import Claim, Context, Section, Units, preset_settings, work
from intriguing.runner.section import SANITY

KEY = "lipschitz_gap"
TINY = "tiny FC16-16-10 (untrained)"


@dataclass(frozen=True)
class Settings:
    models: tuple[str, ...] = ("FC100-100-10", "FC200-200-10")
    images: int = 1000
    seed: int = 0


SETTINGS = preset_settings(smoke=Settings(models=(TINY,), images=50), default=Settings(),
                           full=Settings(images=10_000))


def _model_spec(ctx: Context, s: Settings, name: str) -> work.TrainModel | None:
    """Zoo model ``name`` as units of work name it; None for the tiny stand-in (built by the unit)."""
    return None if name == TINY else work.TrainModel.of(name, seed=s.seed, data_dir=ctx.data_dir, cache=ctx.cache)


def trained_models(ctx: Context, s: Settings) -> list[work.TrainModel]:
    """The zoo models bounded (the section's ``models``)."""
    return [m for m in (_model_spec(ctx, s, name) for name in s.models) if m is not None]


def units(ctx: Context, s: Settings) -> Units:
    """One unit of work per model, kept (LipSDP on FC200-200-10 takes minutes): they need only the
    trained models, so the runner runs them ahead (the section's ``ahead``)."""
    data_dir = work.absolute_data_dir(ctx.data_dir)
    specs = tuple(work.LipschitzGap(_model_spec(ctx, s, name), s.images, s.seed, data_dir) for name in s.models)
    return Units(work.lipschitz_gap, specs, keep=dict)


def run(ctx: Context, s: Settings, _: dict) -> dict[str, Any]:
    """Product bound, LipSDP and the largest Jacobian norm on the first ``images`` test images, per model;
    one unit of work per model on ``ctx.backend``."""
    rows = ctx.map_units(units(ctx, s), "models bounded by LipSDP")
    images = len(data.load_mnist("test", ctx.data_dir)[0][: s.images])
    return {"images": images, "rows": dict(zip(s.models, rows))}


def render(result: dict[str, Any], ctx: Context) -> str:
    rows = [[name, f"{r['lower']:.2f}", f"{r['lipsdp']:.2f}", f"{r['product']:.2f}",
             f"{r['product'] / r['lipsdp']:.2f}", f"{r['lipsdp'] / r['lower']:.2f}"] for name, r in result["rows"].items()]
    return "\n\n".join([
        f"Global L2 Lipschitz constants of the logits: the largest Jacobian norm on {result['images']} test images "
        "(a lower bound), LipSDP-Neuron (Fazlyab et al. 2019) and the paper's product of layer norms (upper bounds).",
        table(["model", "lower (Jacobian)", "LipSDP", "product", "product/LipSDP", "LipSDP/lower"], rows),
    ])


def claims(result: dict[str, Any]) -> list[Claim]:
    """lower <= LipSDP <= product is a guarantee (up to the SDP solver's accuracy, 1e-3 relative)."""
    ordered = {n: r["lower"] <= r["lipsdp"] * (1 + 1e-3) and r["lipsdp"] <= r["product"] * (1 + 1e-3)
               for n, r in result["rows"].items()}
    evidence = "; ".join(f"{n}: {r['lower']:.2f} <= {r['lipsdp']:.2f} <= {r['product']:.2f}"
                         for n, r in result["rows"].items())
    return [Claim(KEY, "Jacobian lower bound <= LipSDP <= the paper's product bound, for every model",
                  all(ordered.values()), evidence, kind=SANITY)]


SECTION = Section(key=KEY, title="How loose is the paper's product bound?", run=run, render=render, settings=SETTINGS,
                  estimate_seconds={"smoke": 5, "default": 100, "full": 900}, claims=claims, models=trained_models,
                  ahead=lambda ctx, s: [units(ctx, s)])

"""The ``units`` section: Section 3 of the paper (Figs 1-2), units versus random directions.

For each chosen layer the library's :func:`~intriguing.units.analyse` runs on the trained net under
every seed, and on two baselines: the same architecture untrained (the very weights training starts
from) and raw pixels as the "layer". :func:`~intriguing.units.summarise_study` pools the seeds; the
report shows one verdict per layer and law, the paper's Figs 1-2 redrawn by a fixed rule, and the
claim of Sec. 3 checked once for the paper's law and once for the others.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from intriguing import data
from intriguing.report import table
from intriguing.report.figures.units import save_grid, save_purity_distributions
from intriguing.runner import Claim, Context, Section, Units, preset_settings, work
from intriguing.runner.section import dataset_name
from intriguing.units import (
    LAWS,
    RANDOM_IMAGES,
    Comparison,
    LayerAnalysis,
    UnitStudy,
    analyse_activations,
    equivalent,
    slug,
    summarise_study,
)

Key = tuple[str, str, str]  # (model, layer, variant)


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


def trained_models(ctx: Context, settings: StudySettings) -> list[work.TrainModel]:
    """Each studied model under each seed, as units of work name them (the section's ``models``)."""
    names = dict.fromkeys(model for model, _ in settings.layers)
    return [work.TrainModel.of(name, seed=seed, limit=settings.train_limit, overrides=settings.train_overrides or None,
                               data_dir=ctx.data_dir, cache=ctx.cache) for name in names for seed in settings.seeds]


def seed_units(ctx: Context, settings: StudySettings) -> Units:
    """One unit of work per model and seed (:func:`intriguing.runner.work.units_seed`): they need only the
    trained models, so the runner runs them ahead (the section's ``ahead``)."""
    return Units(work.units_seed, tuple(
        work.UnitsSeed(model, layers=tuple(layer for name, layer in settings.layers if name == model.name),
                       images=settings.images, k=settings.k, directions=settings.directions)
        for model in trained_models(ctx, settings)))


def _analyse_models(ctx: Context, settings: StudySettings) -> dict[Key, list[LayerAnalysis]]:
    """Every chosen layer of every model, trained and untrained, under every seed (one analysis each), on
    ``ctx.backend``."""
    units = seed_units(ctx, settings)
    analyses: dict[Key, list[LayerAnalysis]] = {}
    for spec, found in zip(units.specs, ctx.map_units(units, "units: model seeds", share=0.8)):
        for layer, variant, analysis in found:
            analyses.setdefault((spec.model.name, layer, variant), []).append(analysis)
    return analyses


def _run(ctx: Context, settings: StudySettings, _results: dict[str, Any]) -> dict[str, Any]:
    images, labels = data.load_mnist("test", ctx.data_dir)
    images, labels = images[: settings.images], labels[: settings.images]
    analyses = _analyse_models(ctx, settings)
    analyses[("raw pixels", "pixels", "pixels")] = [
        analyse_activations(images.flatten(1), labels, seed=seed, layer="pixels", k=settings.k,
                            directions=settings.directions)
        for seed in settings.seeds
    ]
    ctx.stage("units: statistics and figures", 0.8)
    studies = [summarise_study(found, model=name, variant=variant, resamples=settings.resamples,
                               seed=settings.stats_seed)
               for (name, _, variant), found in analyses.items()]
    grids = [
        save_grid(ctx.figures / f"units-{slug(name, layer)}.png", images, labels, found[0],
                  title=f"{name} / {layer}, seed {found[0].seed}").name
        for (name, layer, variant), found in analyses.items() if variant == "trained"
    ]
    distribution = save_purity_distributions(
        ctx.figures / "units-purity.png", [s for s in studies if s.variant == "trained"]).name
    return {"settings": settings, "studies": studies, "grids": grids, "distribution": distribution}


def _studies(result: dict[str, Any], variant: str | None = "trained") -> list[UnitStudy]:
    """The section's studies of one variant ("trained"), or the baselines (``None``)."""
    studies = [UnitStudy.from_json(s) for s in result["studies"]]
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
    return table(["model", "layer", "units versus", "units purity", "their purity", "Δ purity (95% CI)",
                  "p", "Δ entropy, bits (95% CI)", "Δ selectivity (95% CI)", "verdict (purity)"], rows)


def _render(result: dict[str, Any], ctx: Context) -> str:
    settings = result["settings"]
    trained = _studies(result)
    dead = ", ".join(f"{s.model}/{s.layer} {s.families[0].constant}" for s in trained)
    figures = "\n\n".join(f"![top-k images](figures/{name})" for name in result["grids"])
    return f"""\
**Paper (Sec. 3, Figs 1-2).** The images that most activate a single unit look no more semantically
coherent than those that most activate a random direction: the space, not the unit, carries meaning.

**Ours.** For every unit and for {settings['directions']} random directions per law (each with both signs)
we take the top-{settings['k']} of {settings['images'] or "all 10,000"} {dataset_name(ctx.data_dir)} test images
by `<phi(x), d>`, and
score each direction by the label purity and label entropy of its top-k and by the class-selectivity index
of its projection over all images (Morcos et al. 2018, projection shifted to minimum 0). Laws: *gaussian*
(isotropic in activation space, the paper's), *whitened* (isotropic after centring and whitening the
activations), *rotation* (columns of random rotations of the unit basis); *random images* (k images drawn
at random) is the chance level. Δ = units minus the other family, averaged over seeds {settings['seeds']};
95% percentile bootstrap CI (directions resampled within each seed, {settings['resamples']} resamples) and
two-sided permutation p-value. Constant (dead) units are left out (per layer, all seeds: {dead}). Verdict:
the purity CI excludes 0 and p < 0.05; each row is one test, so read p near 0.05 with care. The paper's
claim ("no more coherent") is tested as equivalence: it holds for a layer only if units are significantly
less coherent, or if two one-sided tests (TOST: the 90% bootstrap interval inside ±{MARGIN:g}) show the
purity difference to be smaller than the margin of ±{MARGIN:g} purity ({MARGIN * settings['k']:g} of
{settings['k']} images).

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


# Equivalence margin of Sec. 3's claim, in top-k label purity (a share of the k images).
MARGIN = 0.05


def _support(c: Comparison) -> bool | None:
    """Whether one layer x law supports "units are no more coherent": significantly less coherent, or
    equivalent within ``±MARGIN`` (TOST); ``False`` when significantly more coherent; else undecided."""
    if c.verdict == "units more coherent":
        return False
    return True if c.verdict == "units less coherent" or equivalent(c, MARGIN) else None


def _seeds_needed(c: Comparison, seeds: int) -> int | None:
    """Seeds whose 90% interval would fit inside the margin (or exclude 0), were Δ and the spread to stay."""
    if c.tost_low is None or c.tost_high is None:
        return None
    half, d = (c.tost_high - c.tost_low) / 2, abs(c.difference)
    room = MARGIN - d if d < MARGIN else d
    return max(seeds + 1, math.ceil(seeds * (half / room) ** 2)) if room > 0 else None


def _claims(result: dict[str, Any]) -> list[Claim]:
    """Sec. 3's claim, once for the paper's law and once for the others, tested as equivalence.

    "Units are no more coherent than random directions" holds only where, in every layer, units are
    significantly less coherent (top-k purity) or equivalent within ±MARGIN (two one-sided tests on
    the 90% bootstrap interval); it fails where they are significantly more coherent somewhere, and
    is undecided otherwise: "no significant difference" alone is absence of evidence.
    """
    trained = _studies(result)
    claims = []
    for laws, statement in (
        (("gaussian",), "Single units are no more semantically coherent than random (isotropic Gaussian) "
                        "directions (Sec. 3, Figs 1-2): top-k label purity"),
        (LAWS[1:], "Nor are they more coherent than other random directions: whitened Gaussian, columns of "
                   "random rotations (our extension of Sec. 3): top-k label purity"),
    ):
        found = [(s, s.comparison(law)) for s in trained for law in laws]
        support = [_support(c) for _, c in found]
        holds = False if False in support else None if None in support else True
        evidence = "; ".join(f"{s.model}/{s.layer} vs {c.family}: Δ {_interval(c)}, 90% {_tost(c)}, "
                             f"p={c.p_value:.4f} → {_reading(c)}" for s, c in found)
        needed = [n for (s, c), ok in zip(found, support) if ok is None
                  for n in [_seeds_needed(c, len(s.seeds))] if n is not None]
        note = (f"; undecided: about {max(needed)} seeds would decide it if Δ and its spread stay" if holds is None
                and needed else "")
        claims.append(Claim("units", f"{statement}, equivalence margin ±{MARGIN:g}", holds,
                            f"units minus directions, purity (95% CI; 90% interval for TOST): {evidence}{note}.",
                            needed_n=max(needed) if holds is None and needed else None))
    return claims


def _tost(c: Comparison) -> str:
    return "n/a" if c.tost_low is None else f"{c.tost_low:+.3f} to {c.tost_high:+.3f}"


def _reading(c: Comparison) -> str:
    """One layer x law in words: what the tests say about "no more coherent"."""
    if c.verdict != "no significant difference":
        return c.verdict
    return f"equivalent within ±{MARGIN:g}" if equivalent(c, MARGIN) else "neither different nor equivalent"


SECTION = Section(
    key="units",
    title="Units versus random directions (Section 3, Figs 1-2)",
    run=_run,
    render=_render,
    settings=preset_settings(
        # Smoke: the FC net only (the quick model the transfer section's smoke run shares from the cache).
        smoke=StudySettings(layers=(("FC100-100-10", "h1"), ("FC100-100-10", "h2")), seeds=(0,), directions=20,
                            resamples=200, images=1000, train_limit=1000,
                            train_overrides={"epochs": 3, "batch_size": 32, "pretrain_epochs": 1}),
        default=StudySettings(),
        full=StudySettings(seeds=(0, 1, 2, 3, 4), directions=2000, resamples=10000),
    ),
    estimate_seconds={"smoke": 6, "default": 55, "full": 900},
    claims=_claims,
    models=trained_models,
    ahead=lambda ctx, settings: [seed_units(ctx, settings)],
)

"""Report section ``exactness``: how close is L-BFGS to the true minimal distortion? (Sec. 4.1, Eq. 1)

The paper reports what box-constrained L-BFGS finds as "the minimum distortion". On a small ReLU
network the true minimum of Eq. 1 is computable by branch and bound over a mixed-integer program
(Tjeng et al. 2019), and bound propagation certifies a lower bound (CROWN, Zhang et al. 2018). For
test examples with random targets we show exact vs paper-faithful vs refined L-BFGS distortions
and check the bracket certified <= exact <= found.

The net is the zoo's FC20-20-10(ReLU) (784-20-20-10, FC50-50-10(ReLU)'s recipe, about 4.6% test
error): random targets need perturbations large enough that most ReLUs can switch inside the
search ball; with 40 ReLUs every exact problem is proven optimal in seconds to minutes, with the
100 of FC50-50-10(ReLU) most are not. It is a real trained classifier, so the comparison says how
far L-BFGS is from the optimum on a trained network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from intriguing.oracles.compare import joined
from intriguing.report.markdown import table
from intriguing.runner import Claim, Context, Section, preset_settings, work
from intriguing.runner.section import SANITY

KEY = "exactness"
MODEL = "FC20-20-10(ReLU)"


@dataclass(frozen=True)
class Settings:
    model: str = MODEL
    examples: int = 20
    time_limit: float = 60.0
    seed: int = 0
    limit: int | None = None
    overrides: dict | None = None


SETTINGS = preset_settings(
    # Smoke: trained enough (3 epochs on 1,000 images) that the attack succeeds and both problems are proven
    # in seconds. A problem stopped by its time limit depends on the machine's speed (its node count, its
    # bound), so a run that hits limits is not bitwise repeatable across workers.
    smoke=Settings(examples=2, time_limit=10.0, limit=1000, overrides={"epochs": 3}),
    default=Settings(time_limit=300.0),
    full=Settings(examples=50, time_limit=600.0),
)


def trained_model(ctx: Context, s: Settings) -> work.TrainModel:
    """The solved network, as units of work name it (the section's ``models``)."""
    return work.TrainModel.of(s.model, seed=s.seed, limit=s.limit, overrides=s.overrides, data_dir=ctx.data_dir,
                              cache=ctx.cache)


def run(ctx: Context, s: Settings, _: dict) -> dict[str, Any]:
    """Attack, certify and solve exactly the first correctly classified test examples, with seeded random
    targets: one unit of work per example (the exact problems' times vary by orders of magnitude)."""
    model = trained_model(ctx, s)
    trained = model.load()
    correct, target = work.exact_choice(trained.model.eval(), s.examples, s.seed, model.data_dir)
    specs = [work.ExactExamples(model, (i,), (t,), s.time_limit) for i, t in zip(correct.tolist(), target.tolist())]
    out = joined(ctx.map(work.exact_examples, specs, "examples solved exactly", keep=dict))
    return {"model": s.model, "test_error": trained.record.test_error, "time_limit": s.time_limit,
            "indices": correct.tolist(), "targets": target.tolist(), **out}


def render(result: dict[str, Any], ctx: Context) -> str:
    s = result["summary"]
    rows = [[str(r["index"]), *(_ratio(r[k]) for k in ("certified", "exact")), r["status"],
             *(_ratio(r[k]) for k in ("refined", "paper", "refined_ratio", "paper_ratio")), f"{r['seconds']:.1f}",
             f"{r['cpu_seconds']:.1f}"] for r in result["rows"]]
    header = ["#", "certified", "exact", "status", "refined", "paper", "refined/exact", "paper/exact", "wall s", "cpu s"]
    return "\n\n".join([
        f"RMS distortions on {result['model']} (test error {result['test_error']:.2%}): the certified lower bound "
        f"(CROWN), the exact minimum (branch and bound, {result['time_limit']:g} s limit each, relative gap 1e-4) "
        "and L-BFGS, refined and paper-faithful.",
        table(header, rows),
        f"{s['solved']}/{s['examples']} solved to optimality. Over them, refined/exact: median "
        f"{_ratio(s['median_refined_ratio'])}, worst {_ratio(s['worst_refined_ratio'])}; paper/exact: median "
        f"{_ratio(s['median_paper_ratio'])}, worst {_ratio(s['worst_paper_ratio'])}. certified <= exact <= found "
        f"for every example: {'yes' if s['ordered'] else 'NO'}.",
    ])


def _ratio(value: float | None) -> str:
    """A distortion or ratio to 4 places; "n/a" where there is none (a failed attack, an unsolved problem:
    NaN in the run, ``null`` once stored as JSON)."""
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"


def claims(result: dict[str, Any]) -> list[Claim]:
    """The bracket is a mathematical guarantee: a failure means a bug in an oracle or the attack's check."""
    s = result["summary"]
    return [Claim(KEY, "Certified lower bound <= exact minimum <= L-BFGS's distortion on every example",
                  bool(s["ordered"]), f"{s['solved']}/{s['examples']} exact problems solved", kind=SANITY)]


SECTION = Section(key=KEY, title="How close is L-BFGS to the optimum?", run=run, render=render, settings=SETTINGS,
                  estimate_seconds={"smoke": 10, "default": 900, "full": 9000}, claims=claims,
                  models=lambda ctx, s: [trained_model(ctx, s)])

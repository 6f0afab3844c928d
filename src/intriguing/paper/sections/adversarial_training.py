"""The report's "Adversarial training (Section 4.1)" section: our comparison beside the paper's errors.

The paper states three test errors for its 100-100-10 network (1.6% with weight decay, about 1.3%
with dropout, below 1.2% with per-layer pools of adversarial examples). The section runs each
variant and seed of the study (:func:`intriguing.advtrain.run_one`) as a unit of work at the preset's
scale, shows each variant's test error (mean ± std over seeds) and robustness beside them, and judges
the claims only at the paper's scale.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

from intriguing import records, stats
from intriguing.advtrain import INPUT, AdvTrainConfig, AdvTrainStudyConfig, RunResult, collect_study, study_jobs
from intriguing.paper.tables import paper
from intriguing.paper.verdicts import all_positive, gap, listed, undecided_note, welch_gap
from intriguing.report import number, table
from intriguing.runner import Claim, Context, Section, Units, preset_settings, work
from intriguing.runner.section import dataset_name

KEY = "adversarial_training"
MNIST_TRAINING_SET = 60_000  # the paper trained on all of it; fewer images cannot test its numbers
MNIST_TEST_SET = 10_000  # the test set every variant is scored on
# What the recorded search (issue 16) found at the paper's scale; the full preset takes its settings.
RECORD = (
    "The recorded recipe search (`experiments/RESULTS.md` in the repository: every configuration tried, chosen on "
    "a validation split, the test set used once) found no adversarial-training setting that beats plain "
    "training: on all 60,000 images, seeds 0–2, the best (an input pool, 4 pool examples per minibatch, 30 "
    "epochs) reached 2.13 ± 0.16% test error against 1.84 ± 0.03% for the same recipe without pools (Welch "
    "p = 0.085), while the zoo's weight-decay recipe reaches 1.60 ± 0.07%. The paper's \"below 1.2%\" is not "
    "reproduced; the pools raise the distortion adversarial examples need by 42%."
)


def paper_bound() -> float:
    """The paper's claim for adversarial training, "below 0.012", as the number 0.012."""
    return float(paper(KEY)["adversarial_training_test_error"].removeprefix("below "))


def paper_figure(layers: Sequence[str], dropout: float) -> str:
    """The paper's test error for a variant, as the paper states it (Section 4.1)."""
    if not layers:
        key = "baseline_test_error_dropout" if dropout else "baseline_test_error_weight_decay"
        return f"{100 * paper(KEY)[key]:.1f}%"
    if tuple(layers) == (INPUT,):
        return "no gain reported"
    if len(layers) == 1:
        return "higher layers \"more useful\""
    return f"below {100 * paper_bound():.1f}%"


def units(ctx: Context, config: AdvTrainStudyConfig) -> Units:
    """One unit of work per variant and seed, kept (at the paper's scale each takes about 20 minutes): they
    need no zoo model, so the runner runs them ahead (the section's ``ahead``)."""
    data_dir = work.absolute_data_dir(ctx.data_dir)
    return Units(work.adv_train_run, tuple(work.AdvTrainRun(config, variant, seed, data_dir)
                                           for variant, seed in study_jobs(config)),
                 keep=functools.partial(records.from_jsonable, RunResult))


def run(ctx: Context, config: AdvTrainStudyConfig, results: dict[str, Any]) -> dict[str, Any]:
    """Train and test every variant and seed of ``config``, one unit of work per run on ``ctx.backend``;
    the study as a JSON-able record."""
    runs = ctx.map_units(units(ctx, config), "adversarial training runs")
    # The runs' own training time: the section's wall time misses runs kept by an earlier, killed run or run ahead.
    return records.to_jsonable(collect_study(config, runs, sum(r.seconds for r in runs), ctx.data_dir))


def _per_seed(result: dict[str, Any], variant: str, field: str) -> list[float]:
    """One number per training seed of ``variant``: its ``"test_error"`` or robustness ``"distortion"``."""
    runs = [r for r in result["runs"] if r["variant"] == variant]
    return [r["test_error"] if field == "test_error" else r["robustness"]["mean_distortion"] for r in runs]


def _estimate(values: Sequence[float], rate: bool, test_images: int = MNIST_TEST_SET) -> dict[str, Any]:
    """Mean over seeds with its Student-t 95% interval; one seed: a test error's Wilson interval over the
    test set (a distortion, none)."""
    if len(values) > 1:
        return dataclasses.asdict(stats.mean_interval(values))
    if rate:
        return dataclasses.asdict(stats.wilson_interval(round(values[0] * test_images), test_images))
    return {"value": values[0], "low": None, "high": None, "n": 1}


def _shown(estimate: dict[str, Any], rate: bool) -> str:
    kind = "rate" if rate else "distortion"
    text = f"{number(estimate['value'], kind)}"
    if estimate["low"] is None or math.isnan(estimate["low"]):
        return text
    return f"{text} ({number(estimate['low'], kind).rstrip('%')}–{number(estimate['high'], kind)})"


def _weight_decay_only(result: dict[str, Any]) -> dict[str, Any] | None:
    """The summary row of the weight-decay baseline ("before" adversarial training), if it was run."""
    return next((s for s in result["summary"] if not s["layers"] and not s["dropout"]), None)


def _rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per variant: the paper's error, ours, robustness relative to weight decay, time per run."""
    baseline = _weight_decay_only(result)
    rows = []
    for s in result["summary"]:
        ratio = (f" ({s['distortion_mean'] / baseline['distortion_mean']:.2f}×)"
                 if baseline and s["distortion_mean"] and baseline["distortion_mean"] else "")
        error = _estimate(_per_seed(result, s["variant"], "test_error"), rate=True)
        distortion = _estimate(_per_seed(result, s["variant"], "distortion"), rate=False)
        rows.append([s["variant"], paper_figure(s["layers"], s["dropout"]), f"**{_shown(error, True)}**",
                     _shown(distortion, False) + ratio, f"{s['seconds_mean']:.0f}"])
    return rows


def _scale(result: dict[str, Any], dataset: str) -> str:
    """The scale the comparison ran at, in one paragraph."""
    config, pools = result["config"], result["config"]["training"]
    return (
        f"{config['model']}, {len(config['seeds'])} seed(s), trained on {result['train_examples']:,} {dataset} "
        f"images for {result['recipe']['epochs']} epochs ({pools['warmup_epochs']} before the pools), "
        f"pools of {pools['pool_size']:,} per layer with {100 * pools['refresh_fraction']:.0f}% "
        f"replaced every {pools['refresh_every']} steps and {pools['pool_batch']} pool examples "
        f"per minibatch, {pools['target']} targets; dropout baseline p = {config['dropout']}. "
        f"Robustness: the {'paper' if not config['eval_attack']['refine'] else 'refined'} L-BFGS attack's average "
        f"minimum RMS distortion on the first {config['eval_examples']} test images, the same targets for every "
        f"model; the weight-decay row is \"before\". "
        f"Training took {result['seconds'] / 60:.1f} min in all (summed over the runs)."
    )


def render(result: dict[str, Any], ctx: Context) -> str:
    """The comparison table, paper beside ours, and the scale it was run at."""
    header = ["variant", "paper's test error", "our test error (95% CI)",
              f"mean minimum distortion, RMS ({result['config']['eval_target']} targets; × weight decay)",
              "seconds per run"]
    intervals = (f"Intervals: Student-t over seeds; with one seed, Wilson over the {MNIST_TEST_SET:,} test images "
                 "(test error) and none (distortion).")
    parts = [table(header, _rows(result)), f"{_scale(result, dataset_name(ctx.data_dir))} {intervals}", RECORD]
    if result["train_examples"] < MNIST_TRAINING_SET:
        parts.append("The paper trained on the full training set: this reduced scale shows the mechanism, not "
                     "the paper's numbers (`intriguing adv-train` runs the full-scale experiment).")
    return "\n\n".join(parts)


def claims(result: dict[str, Any]) -> list[Claim]:
    """Below 1.2% with per-layer pools, and better than weight decay alone (Section 4.1).

    Decided by 95% intervals over training seeds (:func:`~intriguing.paper.verdicts.welch_gap`);
    the 1.2% figure is the paper's MNIST number at its scale, so it is judged only at full scale.
    """
    per_layer = next((s for s in result["summary"] if len(s["layers"]) > 1), None)
    baseline = _weight_decay_only(result)
    if per_layer is None:
        return []
    found = [_below_paper_bound(result, per_layer), *_higher_layers_more_useful(result)]
    if baseline is not None:
        ours, theirs = (_per_seed(result, s["variant"], "test_error") for s in (per_layer, baseline))
        difference = welch_gap(theirs, ours)
        verdict = all_positive({"weight decay − per-layer": difference})
        found.append(Claim(
            section=KEY, statement="Adversarial training (per-layer pools) lowers the test error of weight decay alone",
            holds=verdict.holds, needed_n=verdict.needed_n,
            evidence=f"weight decay − per-layer, mean over {difference.n} seed(s) (95% Welch interval): "
                     f"{difference.text()}" + undecided_note(verdict, "training seeds")))
    return found


def _higher_layers_more_useful(result: dict[str, Any]) -> list[Claim]:
    """Sec. 4.1: "adversarial examples for the higher layers seemed to be significantly more useful than
    those on the input or lower layers": a pool at h2 alone lowers the test error more than one at the
    input or at h1 alone (Welch intervals over seeds). Absent unless the single-layer variants ran."""
    single = {s["layers"][0]: s["variant"] for s in result["summary"] if len(s["layers"]) == 1}
    if not {INPUT, "h1", "h2"} <= set(single):
        return []
    errors = {layer: _per_seed(result, variant, "test_error") for layer, variant in single.items()}
    gaps = {f"{lower} − h2": welch_gap(errors[lower], errors["h2"]) for lower in (INPUT, "h1")}
    verdict = all_positive(gaps)
    return [Claim(
        section=KEY, statement="Adversarial examples of the higher layers are more useful: a pool at h2 alone gives "
                               "a lower test error than a pool at the input or at h1 alone",
        holds=verdict.holds, needed_n=verdict.needed_n,
        evidence="test-error differences over seeds (95% Welch intervals): " + listed(gaps.items())
                 + undecided_note(verdict, "training seeds"))]


def _below_paper_bound(result: dict[str, Any], per_layer: dict[str, Any]) -> Claim:
    """The paper's "below 1.2%": the 95% interval of our test error below (holds) or above (fails) 1.2%."""
    error = _estimate(_per_seed(result, per_layer["variant"], "test_error"), rate=True)
    full_scale = result["train_examples"] >= MNIST_TRAINING_SET
    verdict = all_positive({"1.2% − ours": gap({"value": paper_bound(), "low": paper_bound(),
                                                  "high": paper_bound(), "n": error["n"]}, error)})
    return Claim(
        section=KEY, paper_number=True,
        statement=f"FC100-100-10 trained with per-layer pools of adversarial examples reaches test error "
                  f"below {100 * paper_bound():.1f}%",
        holds=verdict.holds if full_scale else None, needed_n=verdict.needed_n if full_scale else None,
        evidence=f"ours {_shown(error, True)} over {per_layer['seeds']} seed(s)"
                 + ("" if full_scale else f"; not judged at reduced scale ({result['train_examples']:,} images)"),
    )


SECTION = Section(
    key=KEY,
    title="Adversarial training (Section 4.1)",
    run=run,
    render=render,
    claims=claims,
    settings=preset_settings(
        # A few hundred steps on 1,000 images with a larger learning rate: the code path, not the paper.
        smoke=AdvTrainStudyConfig(seeds=(0,), limit=1000, eval_examples=10,
                                  recipe={"epochs": 4, "lr": 1e-2, "batch_size": 64},
                                  training=AdvTrainConfig(warmup_epochs=2, pool_size=32, refresh_every=16)),
        # A sixth of the training set for 20 epochs, a pool at each layer alone too ("higher layers more
        # useful"): the mechanism and its cost, in about four minutes.
        # Batches of 128 (the zoo's FC100-100-10 trains in 64s): the pools' refresh schedule counts steps of 128.
        default=AdvTrainStudyConfig(limit=10_000, eval_examples=100,
                                    recipe={"epochs": 20, "lr": 3e-3, "batch_size": 128},
                                    single_layers=True,
                                    training=AdvTrainConfig(warmup_epochs=3, pool_size=500, refresh_every=79,
                                                            refresh_fraction=0.2)),
        # The paper's scale, with the recorded search's settings (experiments/RESULTS.md, issue 16): the
        # zoo's schedule (Adam 1e-2, 60 epochs) in batches of 128, and its best pools on the test set
        # (3,000 per layer, a fifth regenerated every epoch, 4 pool examples per minibatch).
        full=AdvTrainStudyConfig(eval_examples=300, recipe={"epochs": 60, "batch_size": 128}, single_layers=True,
                                 training=AdvTrainConfig(pool_size=3000, refresh_fraction=0.2, pool_batch=4)),
    ),
    estimate_seconds={"smoke": 10, "default": 240, "full": 5 * 3600},
    ahead=lambda ctx, config: [units(ctx, config)],
)

"""Section 4.1's comparison: adversarial training against weight decay and dropout, over seeds.

The paper reports test errors for one 100-100-10 network: 1.6% with weight decay, about 1.3% with
"carefully applied dropout", below 1.2% with per-layer pools of adversarial examples. Here every
variant runs through the same harness (:func:`~intriguing.advtrain.pools.adversarial_train`, the
baselines with no pools), so they share the data, the recipe, the minibatch loop and the seeds,
and each is summarised as mean ± standard deviation over seeds.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from intriguing import data, records, training, zoo
from intriguing.advtrain.layers import INPUT, hidden_layers, split_at
from intriguing.advtrain.pools import TARGETS, AdvTrainConfig, adversarial_train
from intriguing.advtrain.robustness import Robustness, min_distortion
from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.errors import IntriguingError, check_count, check_limit


@dataclass
class RunResult:
    """One variant trained with one seed: its errors, robustness and cost."""

    variant: str
    seed: int
    train_error: float
    test_error: float
    robustness: Robustness
    seconds: float
    attack_seconds: float
    generated: int
    pool_success_rate: float


@dataclass(frozen=True)
class Variant:
    """One arm of the comparison: its pools (``pools.layers`` empty for the baselines) and the dropout rate
    its recipe trains with (:attr:`~intriguing.training.TrainRecipe.dropout`, the zoo's one mechanism)."""

    pools: AdvTrainConfig
    dropout: float = 0.0


@dataclass(frozen=True)
class AdvTrainStudyConfig:
    """The Section 4.1 comparison: which variants, seeds and data; the CLI's flags override these defaults.

    The variants are the baselines (weight decay only; dropout at rate ``dropout`` after every
    hidden layer) when ``baselines``, adversarial training with an input pool only, and with pools
    at ``layers`` (the paper's per-layer variant), and with ``single_layers`` a pool at each of
    ``layers`` alone, to test "the higher layers' examples are more useful". ``training`` holds the
    pool and schedule shared by all of them. Training uses the first ``limit`` training images (all by
    default); robustness is measured on the first ``eval_examples`` test images by
    ``LBFGS(eval_attack)`` (the paper's attack) aimed at ``eval_target`` (see
    :func:`~intriguing.advtrain.robustness.min_distortion`). ``recipe``
    overrides fields of the model's training recipe (epochs; a larger ``lr`` lets quick runs on a
    few images train at all).
    """

    model: str = "FC100-100-10"
    seeds: tuple[int, ...] = (0, 1, 2)
    layers: tuple[str, ...] = (INPUT, "h1", "h2")
    single_layers: bool = False
    baselines: bool = True
    dropout: float = 0.1
    limit: int | None = None
    eval_examples: int = 100
    eval_target: str = "random"
    eval_attack: LBFGSConfig = field(default_factory=LBFGSConfig.paper)
    recipe: dict[str, Any] = field(default_factory=dict)
    training: AdvTrainConfig = field(default_factory=AdvTrainConfig)

    def __post_init__(self) -> None:
        if not self.seeds:
            raise IntriguingError("seeds: give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise IntriguingError(f"seeds: each seed may appear once, got {tuple(self.seeds)}")
        check_limit(self.limit)
        check_count("eval_examples", self.eval_examples)
        if not 0.0 < self.dropout < 1.0:
            raise IntriguingError(f"dropout: the dropout baseline's rate must lie in (0, 1), got {self.dropout}")
        if self.eval_target not in TARGETS:
            raise IntriguingError(f"unknown eval_target {self.eval_target!r}: choose one of {', '.join(TARGETS)}")
        if not isinstance(self.eval_attack, LBFGSConfig):
            raise IntriguingError(f"eval_attack: expected an LBFGSConfig (e.g. LBFGSConfig.paper()), "
                                  f"got {self.eval_attack!r}")
        self._check_model_and_layers()

    def _check_model_and_layers(self) -> None:
        """A misspelt model or layer, or a dropout baseline on a model without hidden layers, fails here, not
        when the study reaches it after training the baselines."""
        model = zoo.build(self.model, seed=0)  # seeded: no draw from the global generator; an unknown model lists matches
        if isinstance(self.layers, str):
            raise IntriguingError(f"layers: expected a tuple of layer names such as "
                                  f"{(INPUT, *hidden_layers(model))}, got {self.layers!r}")
        for layer in self.layers:
            split_at(model, layer)  # an unknown layer names the model's
        if self.baselines:
            with training.hidden_dropout(model, self.dropout):  # a model without hidden layers fails here
                pass

    def train_recipe(self) -> training.TrainRecipe:
        """The model's zoo recipe without its dropout (the variants say which get dropout), with the
        ``recipe`` overrides (e.g. ``{"epochs": 20}``)."""
        try:
            return replace(zoo.spec(self.model).recipe, **{"dropout": 0.0, **self.recipe})
        except TypeError as e:
            raise IntriguingError(f"recipe overrides {self.recipe} for {self.model}: {e}") from None

    def variants(self) -> dict[str, Variant]:
        """Variant name -> its pools and dropout, baselines first. The adversarial variants get no
        dropout: the paper's adversarially trained network used weight decay only."""
        base = replace(self.training, layers=())
        variants = {}
        if self.baselines:
            variants["weight decay"] = Variant(base)
            variants["dropout"] = Variant(base, dropout=self.dropout)
        singles = [(layer,) for layer in self.layers] if self.single_layers else []
        for layers in dict.fromkeys([(INPUT,), *singles, tuple(self.layers)]):
            variants[f"adversarial ({', '.join(layers)})"] = Variant(replace(base, layers=layers))
        return variants


@dataclass
class VariantSummary:
    """A variant over all seeds: means and sample standard deviations (``None`` with one seed)."""

    variant: str
    layers: tuple[str, ...]
    dropout: float
    seeds: int
    test_error_mean: float
    test_error_std: float | None
    distortion_mean: float
    distortion_std: float | None
    seconds_mean: float


@dataclass
class AdvTrainStudy:
    """Every variant and seed of the comparison, trained in one harness; the config that produced it."""

    config: AdvTrainStudyConfig
    recipe: training.TrainRecipe
    train_examples: int
    runs: list[RunResult]
    summary: list[VariantSummary]
    seconds: float
    environment: dict[str, str] = field(default_factory=records.environment)


def train_and_evaluate(name: str, variant: str, config: AdvTrainConfig, recipe: training.TrainRecipe, seed: int,
                       train_set, test_set, eval_set, *, eval_target: str = "random",
                       eval_attack: Callable | None = None, progress: bool = True) -> RunResult:
    """Train one variant of zoo model ``name`` with one seed and measure its errors and robustness.

    The ``*_set`` arguments are ``(images, labels)`` pairs; ``recipe.dropout`` is the variant's dropout.
    """
    model = zoo.build(name, seed=seed)
    start = time.perf_counter()
    log = adversarial_train(model, *train_set, config, recipe, seed=seed,
                            desc=f"{name} {variant} s{seed}", progress=progress)
    seconds = time.perf_counter() - start
    generated = sum(event.generated for event in log.refreshes)
    succeeded = sum(event.generated * event.success_rate for event in log.refreshes)
    return RunResult(
        variant=variant, seed=seed,
        train_error=training.error_rate(model, *train_set),
        test_error=training.error_rate(model, *test_set),
        robustness=min_distortion(model, *eval_set, target=eval_target, attack=eval_attack),
        seconds=seconds, attack_seconds=log.attack_seconds, generated=generated,
        pool_success_rate=succeeded / generated if generated else math.nan,
    )


def _spread(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) > 1 else None


def summarise_runs(runs: list[RunResult], variants: dict[str, Variant]) -> list[VariantSummary]:
    """Mean and standard deviation over seeds of each variant's test error and robustness."""
    summary = []
    for variant, arm in variants.items():
        mine = [r for r in runs if r.variant == variant]
        errors = [r.test_error for r in mine]
        distortions = [r.robustness.mean_distortion for r in mine]
        summary.append(VariantSummary(
            variant=variant, layers=arm.pools.layers, dropout=arm.dropout, seeds=len(mine),
            test_error_mean=statistics.fmean(errors), test_error_std=_spread(errors),
            distortion_mean=statistics.fmean(distortions), distortion_std=_spread(distortions),
            seconds_mean=statistics.fmean(r.seconds for r in mine),
        ))
    return summary


def study_jobs(config: AdvTrainStudyConfig) -> list[tuple[str, int]]:
    """Every ``(variant, seed)`` run of ``config``, checked first: an unknown recipe field or layer fails
    here, before any training starts (on whatever workers the runs then go to)."""
    config.train_recipe()  # an unknown name fails here, listing the close matches (layers: when config was made)
    return [(variant, seed) for variant in config.variants() for seed in config.seeds]


def run_one(config: AdvTrainStudyConfig, variant: str, seed: int, *, data_dir: str | None = None,
            progress: bool = False) -> RunResult:
    """One run of the study: variant ``variant`` of ``config`` trained with ``seed``, then tested. It
    rebuilds everything from ``config`` (MNIST is read once per process), so a worker can run it alone."""
    images, labels = data.load_mnist("train", data_dir)
    test_set = data.load_mnist("test", data_dir)
    eval_set = test_set[0][: config.eval_examples], test_set[1][: config.eval_examples]
    arm = config.variants()[variant]
    recipe = replace(config.train_recipe(), dropout=arm.dropout)
    return train_and_evaluate(config.model, variant, arm.pools, recipe, seed,
                              (images[: config.limit], labels[: config.limit]), test_set, eval_set,
                              eval_target=config.eval_target, eval_attack=LBFGS(config.eval_attack),
                              progress=progress)


def collect_study(config: AdvTrainStudyConfig, runs: list[RunResult], seconds: float,
                  data_dir: str | None = None) -> AdvTrainStudy:
    """The study record of ``config`` from its finished runs (in :func:`study_jobs` order)."""
    train_examples = len(data.load_mnist("train", data_dir)[1][: config.limit])
    return AdvTrainStudy(config=config, recipe=config.train_recipe(), train_examples=train_examples, runs=runs,
                         summary=summarise_runs(runs, config.variants()), seconds=seconds)


def run_experiment(config: AdvTrainStudyConfig, *, data_dir: str | None = None, progress: bool = True,
                   on_run: Callable[[str, float], None] | None = None) -> AdvTrainStudy:
    """Train every variant of ``config`` with every seed in this process, then test them all (Section 4.1's
    comparison); ``reproduce`` spreads the same :func:`run_one` runs over its workers.

    ``on_run(description, fraction_done)`` is told before each run starts (for progress displays).
    """
    jobs = study_jobs(config)
    start = time.perf_counter()
    runs = []
    for done, (variant, seed) in enumerate(jobs):
        if on_run is not None:
            on_run(f"{variant}, seed {seed}", done / len(jobs))
        runs.append(run_one(config, variant, seed, data_dir=data_dir, progress=progress))
    return collect_study(config, runs, time.perf_counter() - start, data_dir)

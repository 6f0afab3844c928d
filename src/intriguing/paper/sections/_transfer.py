"""What the report sections ``table1`` ... ``table4`` share (Szegedy et al. 2014, Section 4.2).

Tables 1 and 2 study six models trained on the full training set (examples from the *training*
set); Tables 3 and 4 three models trained on the disjoint halves P1 and P2 (examples from the
*test* set). Each pair trains its models and attacks each of them once, as units of work on
``ctx.backend`` (:mod:`intriguing.runner.work`): one unit per model to train, one per shard of
``shard_size`` examples and model to attack. Each shard is stored in ``ctx.artifacts/shards/`` as
it finishes (a killed run redoes only the shards in flight); a model's finished shards are joined
into one ``adversarial-<key>.safetensors``, keyed by everything that determines it (including the
attack's code), so the second table of a pair, and a resumed run, reuse it. Rendering and claim
helpers common to the four tables live here too.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from intriguing import data
from intriguing.attacks import LBFGSConfig
from intriguing.paper.tables import paper
from intriguing.report import cell, header, number, table
from intriguing.report.markdown import marks_differences
from intriguing.runner import Context, preset_settings, work
from intriguing.stats import CONFIDENCE, wilson_interval
from intriguing.transfer import TENSORS, AdversarialSet, predictions
from intriguing.versions import code_version

TARGET_RULE = (
    "targeted attacks; each example's target is drawn uniformly from the 9 wrong labels, "
    "t = (y + k) mod 10 with k ~ U{1..9} from a torch.Generator seeded with the run's seed"
)
# The code that computes a stored attack: the attack itself, the batching and the sharding around it.
ATTACK_CODE = ("intriguing.attacks", "intriguing.transfer", "intriguing.runner.work")


@dataclass(frozen=True)
class TransferSettings:
    """One preset's configuration of Tables 1-4 (hashed: changing it recomputes the tables).

    ``examples`` attacked per model (``None``: the whole split, the paper's scale); ``limit`` and
    ``overrides`` shrink training for quick presets (``None``: the zoo's full recipes), and
    ``error_examples`` measures the clean errors on the first images of each split only (``None``:
    all of it); ``attack`` is the L-BFGS attack (the paper's: :meth:`LBFGSConfig.paper`, since the
    refinement finds examples closer to the boundary, which transfer less); ``shard_size`` examples
    are attacked together (a unit of work, and the batch the attack's floats depend on: fixed, so
    the numbers do not depend on the number of workers); ``seed`` drives the models, the choice of
    examples, the targets and the noise.
    """

    examples: int | None
    limit: int | None = None
    overrides: dict[str, Any] | None = None
    error_examples: int | None = None
    attack: LBFGSConfig = field(default_factory=LBFGSConfig.paper)
    shard_size: int = work.SHARD_SIZE
    seed: int = 0


SETTINGS = preset_settings(
    smoke=TransferSettings(examples=20, limit=1000, overrides={"epochs": 3, "batch_size": 32, "pretrain_epochs": 1},
                           error_examples=2000, attack=LBFGSConfig.paper(max_solves=10, max_iter=50)),
    default=TransferSettings(examples=1000, attack=LBFGSConfig.paper()),
    full=TransferSettings(examples=None, attack=LBFGSConfig.paper()),
)


@dataclass(frozen=True)
class TransferExperiment:
    """The models of a pair of tables and the split whose examples are attacked.

    ``models`` holds (the paper's column name, zoo name, training split); ``seed_offsets`` (one per
    model) are added to the run's seed to initialise each model: no two models of Tables 1-4 start
    from the same weights, so FC100-100-10 on P1 and FC100-100-10' on P2 share only their
    architecture (identical initial weights would inflate the transfer Table 4 measures).
    """

    models: tuple[tuple[str, str, str], ...]
    attacked_split: str
    seed_offsets: tuple[int, ...]

    def seeds(self, seed: int) -> dict[str, int]:
        """Each model's initialisation seed (by column) for the run's ``seed``."""
        return {column: seed + offset for (column, _, _), offset in zip(self.models, self.seed_offsets)}


# Tables 1-2: six models trained on the full training set; the paper attacked *training* examples.
CROSS_MODEL = TransferExperiment(
    models=tuple((name, name, "train") for name in
                 ("FC10(1e-4)", "FC10(1e-2)", "FC10(1)", "FC100-100-10", "FC200-200-10", "AE400-10")),
    attacked_split="train",
    seed_offsets=(1, 2, 3, 0, 4, 5),  # FC100-100-10 keeps the run's seed: the units and table5 sections use it too
)
# Tables 3-4: models on the disjoint halves P1 / P2 ("FC100-100-10'" is FC100-100-10 on P2); test examples.
CROSS_TRAINING_SET = TransferExperiment(
    models=(("FC100-100-10", "FC100-100-10", "P1"), ("FC123-456-10", "FC123-456-10", "P1"),
            ("FC100-100-10'", "FC100-100-10", "P2")),
    attacked_split="test",
    seed_offsets=(6, 7, 8),
)
DISTORTION_COLUMNS = ("av_min_distortion", "av_distortion", "min_av_distortion")


# --- preparing: models, examples, stored attacks ------------------------------------------------------------


@dataclass
class Prepared:
    """An experiment ready to tabulate: trained models, the drawn examples and their adversarial sets.

    ``adversarial`` covers every drawn example; ``correct[column]`` marks those the column's model
    classifies correctly, the only ones its statistics count (:meth:`attacked`), as the ``attack``
    command does: an example the model already gets wrong needs no perturbation to fool it.
    """

    models: dict[str, nn.Module]
    x: torch.Tensor
    y: torch.Tensor
    adversarial: dict[str, AdversarialSet]
    correct: dict[str, torch.Tensor]
    protocol: dict[str, Any]

    def attacked(self, column: str) -> AdversarialSet:
        """``column``'s adversarial set over the examples its model classifies correctly."""
        return subset(self.adversarial[column], self.correct[column])


def subset(adversarial: AdversarialSet, keep: torch.Tensor) -> AdversarialSet:
    """The examples of ``adversarial`` where the boolean mask ``keep`` is true."""
    return AdversarialSet(**{name: getattr(adversarial, name)[keep] for name in TENSORS}, config=adversarial.config)


def model_specs(ctx: Context, s: TransferSettings, experiment: TransferExperiment) -> dict[str, work.TrainModel]:
    """The experiment's models by column name, as units of work name them (each with its own seed)."""
    seeds = experiment.seeds(s.seed)
    return {column: work.TrainModel.of(name, on=on, seed=seeds[column], limit=s.limit, overrides=s.overrides,
                                       data_dir=ctx.data_dir, cache=ctx.cache)
            for column, name, on in experiment.models}


def models_of(experiment: TransferExperiment) -> Callable[[Context, TransferSettings], list[work.TrainModel]]:
    """A table section's :attr:`~intriguing.runner.Section.models`: those of ``experiment``."""
    return lambda ctx, s: list(model_specs(ctx, s, experiment).values())


def prepare(ctx: Context, s: TransferSettings, experiment: TransferExperiment, share: float) -> Prepared:
    """Train (or load) the experiment's models, choose the examples and targets, and attack every model.

    ``share`` is the part of the section's time this takes (for the progress display): the first
    half training, the second attacking.
    """
    specs = model_specs(ctx, s, experiment)
    models, cache_keys = _train(ctx, specs, share / 2)
    x, y, _ = work.chosen_examples(experiment.attacked_split, s.examples, s.seed, ctx.data_dir)
    adversarial = _attack(ctx, s, experiment, specs, cache_keys, len(x), share)
    correct = {column: predictions(model, x) == y for column, model in models.items()}
    return Prepared(models, x, y, adversarial, correct, _protocol(s, experiment, adversarial, correct))


def _attack(ctx: Context, s: TransferSettings, experiment: TransferExperiment, specs: Mapping[str, work.TrainModel],
            cache_keys: Mapping[str, str], n: int, share: float) -> dict[str, AdversarialSet]:
    """Every model's adversarial set of its ``n`` examples: read back from ``adversarial-<key>.safetensors``,
    or attacked shard by shard on ``ctx.backend`` (all models' shards at once, so every worker is busy)."""
    keys = {column: attack_key(s, experiment, cache_keys[column], ctx.device) for column in specs}
    found = {column: work.load_shard(ctx.artifacts / f"adversarial-{key}.safetensors", n)
             for column, key in keys.items()}
    missing = [column for column, adversarial in found.items() if adversarial is None]
    ranges = work.shard_ranges(n, s.shard_size)
    units = [(column, work.AttackShard(specs[column], experiment.attacked_split, s.examples, s.seed, start, stop,
                                       s.attack, ctx.device)) for column in missing for start, stop in ranges]

    def progress(done: int) -> None:
        ctx.stage(f"attack: {done}/{len(units)} shards of {len(missing)} models ({n} examples each)",
                  share * (0.5 + 0.5 * done / max(len(units), 1)))

    progress(0)
    paths = [ctx.artifacts / "shards" / keys[column] / f"{u.start:06d}-{u.stop:06d}.safetensors" for column, u in units]
    metadata = {"attack_code": code_version(*ATTACK_CODE)}
    shards = work.attack_stored(ctx.backend, [u for _, u in units], paths, on_done=progress, metadata=metadata)
    for column in missing:
        found[column] = work.joined([shard for (c, _), shard in zip(units, shards) if c == column])
        found[column].save(ctx.artifacts / f"adversarial-{keys[column]}.safetensors", metadata=metadata)
        shutil.rmtree(ctx.artifacts / "shards" / keys[column], ignore_errors=True)  # joined: the shards are spare
    return found


def _protocol(s: TransferSettings, experiment: TransferExperiment, adversarial: Mapping[str, AdversarialSet],
              correct: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """What a reader needs to judge the tables: sample, targets, seeds, attack, training, intervals.

    ``n_attacked`` examples are drawn; each model's statistics count the ones it classifies
    correctly (``n_counted``), and ``dropped`` is the share it misclassifies (left out).
    """
    return {
        "n_attacked": len(next(iter(adversarial.values()))),
        "n_counted": {c: int(keep.sum()) for c, keep in correct.items()},
        "dropped": {c: wilson_interval(int((~keep).sum()), len(keep)) for c, keep in correct.items()},
        "attacked_split": experiment.attacked_split,
        "target_rule": TARGET_RULE,
        "seeds": {"models": experiment.seeds(s.seed), "examples": s.seed, "targets": s.seed, "noise": s.seed},
        "attack": next(iter(adversarial.values())).config,
        "training": {"limit": s.limit, "overrides": s.overrides,
                     "models": {c: [n, on] for c, n, on in experiment.models}},
        "error_examples": s.error_examples,
        "intervals": f"{100 * CONFIDENCE:.0f}% Wilson score intervals for rates, Student-t for mean distortions",
        "attack_success": {c: subset(a, correct[c]).success_rate() for c, a in adversarial.items()},
    }


def _train(ctx: Context, specs: Mapping[str, work.TrainModel],
           share: float) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The experiment's models by column name (trained on ``ctx.backend`` unless cached) and their cache keys."""
    def progress(done: int) -> None:
        ctx.stage(f"train: {done}/{len(specs)} models", share * done / len(specs))

    progress(0)
    found = work.trained(ctx.backend, list(specs.values()), on_done=progress)
    return ({column: t.model for column, t in zip(specs, found)},
            {column: t.record.cache_key for column, t in zip(specs, found)})


def stored_attack(path: Path, n: int, attack: Callable[[], AdversarialSet]) -> AdversarialSet:
    """Load the adversarial set of ``n`` examples at ``path``, or compute and store it there.

    A damaged file (a disk that filled up, a foreign file) is reported with a warning and
    recomputed, never trusted and never fatal (:func:`intriguing.runner.work.load_shard`, which the
    sharded attacks of :func:`prepare` use the same way).
    """
    adversarial = work.load_shard(path, n)
    if adversarial is None:
        adversarial = attack()
        adversarial.save(path, metadata={"attack_code": code_version(*ATTACK_CODE)})
    return adversarial


def attack_key(s: TransferSettings, experiment: TransferExperiment, model_key: str, device: str = "cpu") -> str:
    """Names a stored attack by what determines it: model weights, examples, targets, the attack and its
    code, and the device when not the CPU (another device gives other floats).

    The code version is a hash of the attack's modules, so a change to the solver recomputes the
    stored attacks instead of reusing stale ones.
    """
    blob = json.dumps({"model": model_key, "split": experiment.attacked_split, "examples": s.examples,
                       "seed": s.seed, "attack": s.attack.to_dict(), "shard_size": s.shard_size,
                       "code": code_version(*ATTACK_CODE), **({"device": device} if device != "cpu" else {})},
                      sort_keys=True)
    return f"{model_key}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def clean_examples(ctx: Context, s: TransferSettings, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The split's images and labels on which clean errors are measured (all, or the first ``error_examples``)."""
    images, labels = data.load_mnist(split, ctx.data_dir)
    return images[: s.error_examples], labels[: s.error_examples]


# --- rendering ----------------------------------------------------------------------------------------------


def paper_cells(key: str) -> dict[str, dict[str, float]]:
    """The paper's table ``key`` as row -> column -> number (its JSON stores rows as lists or dicts)."""
    reference = paper(key)
    return {row: dict(zip(reference["columns"], values)) if isinstance(values, list)
            else {c: values[c] for c in reference["columns"]}
            for row, values in reference["rows"].items()}


def _kind(column: str) -> str:
    return "distortion" if column in DISTORTION_COLUMNS else "rate"


def _nominal(row: str) -> bool:
    """Rows whose distortion the paper states as a nominal stddev, which ours reports realised after clipping."""
    return row.startswith("Gaussian noise") or " amplified to " in row


def comparison(result: dict[str, Any], key: str, ctx: Context,
               extra: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """The paper's table with ours beside every number, rows and columns in the paper's order.

    Differences are marked only where the paper's number is our reference (:func:`marks_differences`:
    MNIST, a preset that judges), and never on a distortion the paper gives as a nominal stddev.
    """
    theirs = paper_cells(key)
    columns = paper(key)["columns"]
    mark = marks_differences(ctx)
    lines = []
    for row, cells in theirs.items():
        ours = result["rows"].get(row, {})
        line = [row] + [cell(cells[c], ours.get(c), _kind(c), mark and not (_kind(c) != "rate" and _nominal(row)))
                        for c in columns]
        line += [_ours(e.get(row)) for e in (extra or {}).values()]
        lines.append(line)
    for row in (r for r in result["rows"] if r not in theirs):  # our rows the paper lacks (e.g. matched noise)
        ours = result["rows"][row]
        lines.append([row] + [_ours(ours.get(c), _kind(c)) for c in columns]
                     + [_ours(e.get(row)) for e in (extra or {}).values()])
    return table(["", *map(header, columns), *(extra or {})], lines)


def _ours(estimate: Mapping[str, Any] | None, kind: str = "distortion") -> str:
    """Our number alone (no paper counterpart), with its interval."""
    if not estimate:
        return "n/a"
    interval = "" if estimate.get("low") is None else (f" ({number(estimate['low'], kind).rstrip('%')}–"
                                                       f"{number(estimate['high'], kind)})")
    return f"**{number(estimate.get('value'), kind)}**{interval}"


def protocol_note(result: dict[str, Any]) -> str:
    """The section's protocol footnote (once, under its table): sample, targets, seed, training, success, intervals."""
    success = ", ".join(f"{c} {number(e['value'], 'rate')}" for c, e in result["attack_success"].items())
    training = result["training"]
    scale = ("full zoo recipes" if training["limit"] is None and not training["overrides"]
             else f"quick training: limit {training['limit']}, overrides {training['overrides']}")
    errors = ("whole splits" if result["error_examples"] is None
              else f"the first {result['error_examples']} images of each split")
    dropped = ", ".join(f"{c} {number(e['value'], 'rate')}" for c, e in result.get("dropped", {}).items())
    counted = (f" Each model's numbers count only the examples it classifies correctly; dropped (misclassified): "
               f"{dropped}." if dropped else "")
    seeds = result["seeds"]["models"]
    models = ", ".join(f"{c} {v}" for c, v in seeds.items()) if isinstance(seeds, dict) else seeds
    return (f"<small>*Protocol.* N = {result['n_attacked']} {result['attacked_split']} examples drawn per "
            f"model; {result['target_rule']}; example seed {result['seeds']['examples']}; initialisation seeds: "
            f"{models}; models: {scale}; clean errors on {errors}.{counted} Attack success: {success}. Intervals: "
            f"{result['intervals']}.</small>")


# --- claims -------------------------------------------------------------------------------------------------


def value(result: dict[str, Any], row: str, column: str) -> float:
    """Our number in a cell of a stored result (NaN where it was not measured)."""
    measured = result["rows"][row][column]["value"]
    return math.nan if measured is None else measured


def mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan

"""Units of work: small frozen specs that any worker turns into a result, with no live model passed.

A unit is a module-level function of one spec (a few hundred bytes: names, seeds, index ranges,
an attack's hyper-parameters). The worker rebuilds the rest itself - the data from the data
folder, the model from the checkpoint cache (training it there when it is missing) - so the
same spec gives the same bytes in this process or on any node of a cluster (with one torch thread
and subnormals flushed, see :func:`intriguing.runner.backends.worker_setup`). The units:

- :func:`train_model`: one zoo model -> its checkpoint (Tables 1-4, Sec. 3);
- :func:`attack_shard`: one fixed range of the attacked examples against one model -> its
  :class:`~intriguing.transfer.AdversarialSet` (Tables 1-4, Sec. 4.2); :func:`attack_stored`
  runs many of them, storing each shard atomically and skipping those already stored;
- :func:`units_seed`: one model and seed of the units study (Sec. 3);
- :func:`adv_train_run`: one variant and seed of the adversarial-training study (Sec. 4.1).

Shards have a fixed size chosen by the data (:data:`SHARD_SIZE`), never by the number of workers:
a batched attack's floats depend on the batch it ran in (BLAS blocking), so the same shards
everywhere are what makes results independent of the backend.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from intriguing import data, records, transfer, zoo
from intriguing.architectures import NUM_CLASSES
from intriguing.attacks import LBFGS, LBFGSConfig
from intriguing.errors import IntriguingError
from intriguing.runner.backends import Backend
from intriguing.runner.kept import map_missing
from intriguing.seeding import example_indices, random_targets
from intriguing.transfer import AdversarialSet

SHARD_SIZE = 250  # examples per attack unit: the batch the attack runs on, whatever the workers


def absolute_data_dir(data_dir: str | Path | None) -> str | None:
    """The data folder as an absolute path for a spec (a worker's working folder and environment may
    differ); the bundled MNIST stays ``None``, each node's own copy."""
    if data_dir or os.environ.get(data.DATA_DIR_ENV):
        return str(data.resolve_data_dir(data_dir).resolve())
    return None


# --- training one model -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainModel:
    """One zoo model as :func:`intriguing.zoo.trained` names it; ``cache`` resolved to a path.

    ``overrides`` is a sorted tuple of (recipe field, value) pairs, so the spec is hashable.
    """

    name: str
    on: str = "train"
    seed: int = 0
    limit: int | None = None
    overrides: tuple[tuple[str, Any], ...] = ()
    data_dir: str | None = None
    cache: str | None = None

    @classmethod
    def of(cls, name: str, *, on: str = "train", seed: int = 0, limit: int | None = None,
           overrides: dict[str, Any] | None = None, data_dir: str | None = None,
           cache: str | None = None) -> TrainModel:
        """A spec naming this process's data and cache folders as absolute paths (:func:`absolute_data_dir`)."""
        return cls(name, on, seed, limit, tuple(sorted((overrides or {}).items())), absolute_data_dir(data_dir),
                   str(zoo.cache_dir(cache).resolve()))

    def load(self) -> zoo.TrainedModel:
        """The trained model (from the cache, or trained and stored there), without a progress bar."""
        return zoo.trained(self.name, on=self.on, seed=self.seed, limit=self.limit,
                           overrides=dict(self.overrides) or None, data_dir=self.data_dir, cache=self.cache,
                           progress=False)

    @property
    def config(self) -> zoo.TrainConfig:
        return zoo.TrainConfig(self.name, self.on, self.seed, self.limit, self.overrides)

    def checkpoint(self) -> Path:
        return zoo.checkpoint_path(self.config, self.data_dir, self.cache)


def longest_first(specs: Sequence[TrainModel]) -> list[int]:
    """The indices of ``specs`` by decreasing :func:`~intriguing.zoo.training_cost` (ties in their order):
    handed out in this order, no worker is left training a long model alone at the end (longest processing
    time first). With 2 workers the default preset's models had ended with FC200-200-10 alone for 74 s."""
    costs = [zoo.training_cost(spec.config, spec.data_dir) for spec in specs]
    return sorted(range(len(specs)), key=lambda i: -costs[i])


def train_model(spec: TrainModel) -> bytes:
    """Unit: train (or find) one model; its checkpoint file's bytes come back to the caller, so the
    caller's cache has it even when the worker's node does not share it."""
    spec.load()
    return spec.checkpoint().read_bytes()


def trained(backend: Backend, specs: Sequence[TrainModel],
            on_done: Callable[[int], None] | None = None) -> list[zoo.TrainedModel]:
    """Train the models of ``specs`` on the backend (in parallel), then load them here; ``on_done(count)``
    is told how many models are ready so far (for the progress line)."""
    train_missing(backend, specs, on_done)
    return [spec.load() for spec in specs]


def train_missing(backend: Backend, specs: Sequence[TrainModel], on_done: Callable[[int], None] | None = None) -> None:
    """Train on the backend (in parallel, :func:`longest_first`) the models of ``specs`` that this process's
    cache lacks, and store each checkpoint here as it arrives. ``on_done(count)``: how many models are ready so far."""
    missing = [i for i, spec in enumerate(specs) if not spec.checkpoint().is_file()]
    missing = [missing[j] for j in longest_first([specs[i] for i in missing])]
    map_missing(backend, train_model, specs, missing, lambda i, weights: store_checkpoint(specs[i], weights), on_done)


def store_checkpoint(spec: TrainModel, weights: bytes) -> None:
    """Store here the checkpoint :func:`train_model` returned, unless the worker shares this cache."""
    if not spec.checkpoint().is_file():
        records.write_bytes(spec.checkpoint(), weights)


# --- attacking one shard of examples ------------------------------------------------------------------------


@dataclass(frozen=True)
class AttackShard:
    """Examples ``start:stop`` of the seeded choice of ``examples`` from ``split``, attacked towards
    their seeded random targets (:func:`intriguing.seeding.random_targets`) on ``model``, on
    ``device`` (``"cpu"``, ``"cuda"``, ...: the attack is where a GPU pays; training stays on the CPU)."""

    model: TrainModel
    split: str
    examples: int | None
    seed: int
    start: int
    stop: int
    attack: LBFGSConfig
    device: str = "cpu"


def shard_ranges(n: int, size: int = SHARD_SIZE) -> list[tuple[int, int]]:
    """``[start, stop)`` of each shard of ``n`` examples: fixed by ``n`` and ``size`` only."""
    if size < 1:
        raise IntriguingError(f"shard size: expected a positive number of examples, got {size}")
    return [(start, min(start + size, n)) for start in range(0, n, size)]


def chosen_examples(split: str, examples: int | None, seed: int,
                    data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The attacked examples: images, labels and targets of the seeded choice from ``split``."""
    images, labels, index, targets = _choice(split, examples, seed, data_dir)
    return images[index], labels[index], targets


def _choice(split: str, examples: int | None, seed: int, data_dir: str | None):
    """The split's images and labels, the seeded choice's indices into them and its targets."""
    images, labels = data.load_mnist(split, data_dir)
    index = example_indices(len(images), examples, seed)
    return images, labels, index, random_targets(labels[index], NUM_CLASSES, seed=seed)


def attack_shard(spec: AttackShard) -> AdversarialSet:
    """Unit: one shard's adversarial set. The worker keeps this shard's images only; the targets
    are drawn for the whole choice first, so a shard's targets do not depend on the shard size."""
    images, _, index, targets = _choice(spec.split, spec.examples, spec.seed, spec.model.data_dir)
    x, targets = images[index[spec.start : spec.stop]], targets[spec.start : spec.stop].clone()
    del images  # the split's float copy; only the shard is kept while attacking
    device = torch.device(spec.device)
    model = spec.model.load().model.to(device)
    found = transfer.attack_model(model, x.to(device), targets.to(device), attack=LBFGS(spec.attack),
                                  batch_size=len(x))
    return AdversarialSet(**{name: getattr(found, name).cpu() for name in transfer.TENSORS}, config=found.config)


def load_shard(path: Path, n: int) -> AdversarialSet | None:
    """The stored adversarial set of ``n`` examples at ``path``; None when absent, or damaged or of
    another length (reported with a warning: it is recomputed, never trusted and never fatal)."""
    if not path.is_file():
        return None
    try:
        found = AdversarialSet.load(path)
    except IntriguingError as e:
        warnings.warn(f"{e}; recomputing the attack", stacklevel=3)
        return None
    if len(found) != n:
        warnings.warn(f"{path}: holds {len(found)} examples, expected {n}; recomputing the attack", stacklevel=3)
        return None
    return found


def attack_stored(backend: Backend, specs: Sequence[AttackShard], paths: Sequence[Path],
                  on_done: Callable[[int], None] | None = None,
                  metadata: dict[str, str] | None = None) -> list[AdversarialSet]:
    """Every shard's adversarial set: stored ones read back, the others computed on the backend and
    each written atomically to its path as it arrives, so a killed run redoes only the shards in
    flight. ``on_done(count)`` is told how many shards are finished (stored ones included)."""
    found = [load_shard(path, spec.stop - spec.start) for spec, path in zip(specs, paths)]

    def keep(i: int, shard: AdversarialSet) -> None:
        found[i] = shard
        shard.save(paths[i], metadata=metadata)

    map_missing(backend, attack_shard, specs, [i for i, shard in enumerate(found) if shard is None], keep, on_done)
    return found


def joined(shards: Sequence[AdversarialSet]) -> AdversarialSet:
    """One adversarial set from consecutive shards of the same model and attack."""
    return AdversarialSet(**{name: torch.cat([getattr(s, name) for s in shards])
                             for name in ("adversarial", "target", "success", "distortion")},
                          config=dict(shards[0].config))


# --- one seed of the units study (Sec. 3) -------------------------------------------------------------------


@dataclass(frozen=True)
class UnitsSeed:
    """The chosen ``layers`` of one trained model (and of its untrained initialisation) under its
    seed, analysed on the first ``images`` test images (:func:`intriguing.units.analyse`)."""

    model: TrainModel
    layers: tuple[str, ...]
    images: int | None
    k: int
    directions: int


def units_seed(spec: UnitsSeed) -> list[tuple[str, str, Any]]:
    """Unit: ``(layer, variant, LayerAnalysis)`` for variant "trained" then "untrained", layers in order."""
    from intriguing.units import analyse

    images, labels = data.load_mnist("test", spec.model.data_dir)
    images, labels = images[: spec.images], labels[: spec.images]
    name, seed = spec.model.name, spec.model.seed
    models = (("trained", spec.model.load().model), ("untrained", zoo.build(name, seed=seed).eval()))
    return [(layer, variant, analyse(model, layer, images, labels, seed=seed, k=spec.k, directions=spec.directions))
            for variant, model in models for layer in spec.layers]


# --- one network's layer-wise bounds (Table 5, Sec. 4.3) -------------------------------------------------


@dataclass(frozen=True)
class BoundNetwork:
    """Table 5 for one network: AlexNet with seeded random weights when ``model`` is None (no trained
    ImageNet weights ship), else a trained zoo model, whose bounds come with empirical lower bounds from
    its first ``images`` test images (input gradients) and ``pairs`` of them attacked by ``attack``."""

    model: TrainModel | None
    images: int = 0
    pairs: int = 0
    attack: LBFGSConfig = LBFGSConfig.refined()
    tol: float = 1e-5
    seed: int = 0


def bound_network(spec: BoundNetwork) -> Any:
    """Unit: the network's :class:`~intriguing.spectral.SpectralTable`."""
    from intriguing import alexnet, architectures
    from intriguing.spectral import adversarial_pairs, spectral_table

    if spec.model is None:
        return spectral_table(alexnet.alexnet(seed=spec.seed), alexnet.INPUT_SHAPE, name="AlexNet", tol=spec.tol,
                              seed=spec.seed)
    images, labels = data.load_mnist("test", spec.model.data_dir)
    model = spec.model.load().model
    pairs = adversarial_pairs(model, images[: spec.pairs], labels[: spec.pairs], spec.attack) if spec.pairs else None
    return spectral_table(model, architectures.INPUT_SHAPE, name=spec.model.name, images=images[: spec.images],
                          pairs=pairs if pairs is not None and len(pairs[0]) else None, tol=spec.tol, seed=spec.seed)


@dataclass(frozen=True)
class LipschitzGap:
    """One network's global Lipschitz constant bracketed (Sec. 4.3): the paper's product of layer norms,
    LipSDP-Neuron and the largest Jacobian norm on the first ``images`` test images. ``model`` None is a
    seeded untrained 16-16-10 sigmoid MLP whose SDP solves in a second (the smoke stand-in)."""

    model: TrainModel | None
    images: int
    seed: int = 0
    data_dir: str | None = None


def lipschitz_gap(spec: LipschitzGap) -> dict[str, Any]:
    """Unit: ``{"product", "lipsdp", "lipsdp_status", "lipsdp_method", "lipsdp_seconds", "lower"}``."""
    from intriguing.architectures import fully_connected
    from intriguing.oracles import jacobian_lower_bound, lipsdp, product_bound
    from intriguing.seeding import seeded

    if spec.model is None:
        with seeded(spec.seed):
            model = fully_connected(16, 16, 10).eval()
    else:
        model = spec.model.load().model.eval()
    images = data.load_mnist("test", spec.data_dir)[0][: spec.images]
    sdp = lipsdp(model)
    return {"product": product_bound(model), "lipsdp": sdp.value, "lipsdp_status": sdp.status,
            "lipsdp_method": sdp.method, "lipsdp_seconds": sdp.seconds, "lower": jacobian_lower_bound(model, images)}


# --- one photo of Fig. 5 (Sec. 4.1) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Fig5Photo:
    """scikit-image's photo ``photo`` at ``size``, attacked towards class ``target`` on the pretrained
    EfficientNet-Lite0 (:func:`intriguing.imagenet.fig5_examples`), on ``device``."""

    photo: str
    size: int
    target: str
    attack: LBFGSConfig
    device: str = "cpu"


def fig5_photo(spec: Fig5Photo) -> tuple[Any, str]:
    """Unit: the photo's :class:`~intriguing.imagenet.Fig5Examples` (tensors on the CPU) and the
    description of the network that made them."""
    from intriguing import imagenet

    loaded = imagenet.pretrained_model(size=spec.size, device=spec.device)
    examples = imagenet.fig5_examples(loaded.model, imagenet.photos([spec.photo], spec.size), target=spec.target,
                                      class_names=loaded.class_names, names=[spec.photo], config=spec.attack)
    return examples, loaded.description


# --- one exact minimal distortion (beyond the paper: how close L-BFGS gets) ----------------------------------


@dataclass(frozen=True)
class ExactExamples:
    """The test images at ``indices``, each to be made class ``targets[i]`` by ``model``: attacked,
    certified and solved exactly (:func:`intriguing.oracles.compare.compare_with_attack`, ``time_limit``
    seconds per problem). The caller chooses them once (:func:`exact_choice`)."""

    model: TrainModel
    indices: tuple[int, ...]
    targets: tuple[int, ...]
    time_limit: float


def exact_choice(model: torch.nn.Module, examples: int, seed: int,
                 data_dir: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``examples`` test images ``model`` classifies correctly: their indices and their seeded
    random targets (drawn for the whole choice, so an example's target does not depend on how the
    choice is cut into units)."""
    images, labels = data.load_mnist("test", data_dir)
    with torch.no_grad():
        correct = (model(images).argmax(1) == labels).nonzero().squeeze(1)[:examples]
    return correct, random_targets(labels[correct], NUM_CLASSES, seed=seed)


def exact_examples(spec: ExactExamples) -> dict[str, Any]:
    """Unit: the comparison of the examples' distortions (rows numbered from 0 within the unit)."""
    from intriguing.oracles.compare import compare_with_attack

    images = data.load_mnist("test", spec.model.data_dir)[0][list(spec.indices)]
    return compare_with_attack(spec.model.load().model.eval(), images, torch.tensor(spec.targets),
                               time_limit=spec.time_limit)


# --- one seed of the adversarial-training study (Sec. 4.1) --------------------------------------------------


@dataclass(frozen=True)
class AdvTrainRun:
    """One variant of an adversarial-training study (:class:`intriguing.advtrain.AdvTrainStudyConfig`)
    trained with one seed, as :func:`intriguing.advtrain.run_experiment` runs it."""

    study: Any  # AdvTrainStudyConfig (frozen)
    variant: str
    seed: int
    data_dir: str | None = None


def adv_train_run(spec: AdvTrainRun) -> Any:
    """Unit: the :class:`~intriguing.advtrain.study.RunResult` of one variant and seed."""
    from intriguing.advtrain import run_one

    return run_one(spec.study, spec.variant, spec.seed, data_dir=spec.data_dir)


__all__ = [
    "SHARD_SIZE", "AdvTrainRun", "AttackShard", "BoundNetwork", "ExactExamples", "Fig5Photo", "LipschitzGap",
    "TrainModel", "UnitsSeed", "absolute_data_dir", "adv_train_run", "attack_shard", "attack_stored",
    "bound_network", "chosen_examples", "exact_choice", "exact_examples", "fig5_photo", "joined",
    "lipschitz_gap", "load_shard", "shard_ranges", "store_checkpoint", "train_missing", "train_model", "trained",
    "units_seed",
]

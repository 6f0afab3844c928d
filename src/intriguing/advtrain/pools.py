"""Adversarial training with a refreshed pool of adversarial examples per layer (Section 4.1).

"A pool of adversarial examples a random subset of which is continuously replaced by newly
generated adversarial examples and which is mixed into the original training set all the time",
one pool "for each layer separately", the layers trained "in an alternating fashion". Here the
pools take turns step by step, joining every minibatch, and are refreshed on a step schedule
through :func:`intriguing.training.run_epochs`' ``on_step`` hook.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from intriguing import seeding, training
from intriguing.advtrain.layers import INPUT, attack_layer, output_classes, split_at
from intriguing.attacks import LBFGS, LBFGSConfig, Targeted, Untargeted
from intriguing.errors import IntriguingError, check_count, check_images, check_labels

TARGETS = ("random", "untargeted")


@dataclass(frozen=True)
class AdvTrainConfig:
    """How one network is trained: which layers get a pool, the refresh schedule, the regularisers.

    ``layers`` names the layers whose outputs are perturbed: ``"input"`` and/or hidden sigmoid
    modules (``"h1"``, ``"h2"`` in the zoo's fully connected nets); empty trains without pools (the
    baselines; dropout is the recipe's, :attr:`~intriguing.training.TrainRecipe.dropout`). Each pool holds
    ``pool_size`` examples, of which ``refresh_fraction`` are regenerated every ``refresh_every``
    steps after ``warmup_epochs`` of plain training; each step adds ``pool_batch`` pool examples to
    the minibatch. ``target`` is how the pool's adversarial examples are aimed: a ``"random"`` other
    class (one search each) or ``"untargeted"`` (the closest class: nine searches each). ``attack``
    configures :class:`~intriguing.attacks.LBFGS`; the default, :meth:`LBFGSConfig.pool`, is the
    paper's method (no refinement) with a coarse ``c`` search, about twice as fast as the attack's
    defaults for distortions within a few percent: the pool needs many examples, not the last digit.
    """

    layers: tuple[str, ...] = (INPUT,)
    warmup_epochs: int = 2
    pool_size: int = 10_000
    pool_batch: int = 16  # with the zoo's batches of 128: one example in nine comes from a pool
    refresh_every: int = 469  # one epoch of MNIST's 60,000 images in batches of 128
    refresh_fraction: float = 0.1
    target: str = "random"
    attack: LBFGSConfig = field(default_factory=LBFGSConfig.pool)

    def __post_init__(self) -> None:
        if isinstance(self.layers, str):
            raise IntriguingError(f"layers: expected a tuple of layer names such as ('input', 'h1'), "
                                  f"got {self.layers!r}")
        if len(set(self.layers)) != len(self.layers):
            raise IntriguingError(f"layers {list(self.layers)}: each layer may appear once")
        if not 0.0 < self.refresh_fraction <= 1.0:
            raise IntriguingError(f"refresh_fraction must lie in (0, 1], got {self.refresh_fraction}")
        for name, least in (("pool_size", 1), ("pool_batch", 1), ("refresh_every", 1), ("warmup_epochs", 0)):
            check_count(name, getattr(self, name), smallest=least)
        if self.target not in TARGETS:
            raise IntriguingError(f"unknown target {self.target!r}: choose one of {', '.join(TARGETS)}")
        if not isinstance(self.attack, LBFGSConfig):
            raise IntriguingError(f"attack: expected an LBFGSConfig (e.g. LBFGSConfig.pool()), got {self.attack!r}")

    @property
    def refresh_size(self) -> int:
        """How many examples of each pool a refresh replaces."""
        return max(1, round(self.refresh_fraction * self.pool_size))


@dataclass
class Pool:
    """One layer's pool: adversarial outputs of ``layer`` with their true labels.

    ``adversarial`` marks the entries the attack succeeded on when they were generated (the others
    are the clean outputs, harmless training examples); ``born`` is the training step that
    generated each entry, which is how a test sees the schedule at work.
    """

    layer: str
    inputs: torch.Tensor  # (P, ...) what the layers above `layer` receive
    labels: torch.Tensor  # (P,)
    adversarial: torch.Tensor  # (P,) bool
    born: torch.Tensor  # (P,) int64

    def put(self, slots: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor,
            adversarial: torch.Tensor, step: int) -> None:
        """Replace the entries at ``slots`` by examples generated at ``step``."""
        self.inputs[slots] = inputs
        self.labels[slots] = labels
        self.adversarial[slots] = adversarial
        self.born[slots] = step

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` entries drawn with replacement: the pool's share of one minibatch."""
        index = torch.randint(len(self.labels), (n,), generator=generator)
        return self.inputs[index], self.labels[index]


@dataclass
class RefreshEvent:
    """One pool generation: when, which layer, how many entries, and how the attack fared."""

    step: int
    layer: str
    generated: int
    success_rate: float
    mean_distortion: float
    seconds: float


@dataclass
class TrainingLog:
    """What :func:`adversarial_train` leaves behind besides the trained weights."""

    steps: int
    pools: dict[str, Pool]
    refreshes: list[RefreshEvent]

    @property
    def attack_seconds(self) -> float:
        return sum(event.seconds for event in self.refreshes)


class _PoolTrainer:
    """The state of one adversarial training run: pools, whose turn it is, the refresh schedule."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AdvTrainConfig,
                 attack: Callable, steps_per_epoch: int, seed: int):
        self.model, self.images, self.labels = model, images, labels
        self.config, self.attack = config, attack
        self.uppers = {layer: split_at(model, layer)[1] for layer in config.layers}
        self.classes = output_classes(model, images)
        self.generator = seeding.generator(seed)
        self.warmup_steps = config.warmup_epochs * steps_per_epoch
        self.pools: dict[str, Pool] = {}
        self.refreshes: list[RefreshEvent] = []
        self.turn = 0

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the minibatch joined by ``pool_batch`` examples of one pool (weight decay
        is :func:`~intriguing.training.run_epochs`' own)."""
        total = nn.functional.cross_entropy(self.model(x), y, reduction="sum")
        count = len(y)
        if self.pools:
            layer = self.config.layers[self.turn]
            pool_x, pool_y = self.pools[layer].sample(self.config.pool_batch, self.generator)
            total = total + nn.functional.cross_entropy(self.uppers[layer](pool_x), pool_y, reduction="sum")
            count += len(pool_y)
        return total / count

    def after_step(self, step: int) -> None:
        """Pass the turn to the next pool; fill the pools after warm-up, then refresh them on schedule."""
        self.turn = step % len(self.config.layers)
        since = step - self.warmup_steps
        if since < 0 or since % self.config.refresh_every:
            return
        self.model.eval()
        for layer in self.config.layers:
            if layer in self.pools:
                slots = torch.randperm(self.config.pool_size, generator=self.generator)[: self.config.refresh_size]
                self.pools[layer].put(slots, *self._generate(layer, len(slots), step), step)
            else:
                inputs, labels, adversarial = self._generate(layer, self.config.pool_size, step)
                self.pools[layer] = Pool(layer, inputs, labels, adversarial, torch.full_like(labels, step))
        self.model.train()

    def _generate(self, layer: str, n: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` fresh adversarial outputs of ``layer`` from random training examples, their labels and
        whether the attack succeeded, in one batch for the current network."""
        start = time.perf_counter()
        source = torch.randint(len(self.labels), (n,), generator=self.generator)
        images, labels = self.images[source], self.labels[source]
        if self.config.target == "untargeted":
            criterion = Untargeted(labels)
        else:
            criterion = Targeted(seeding.random_targets(labels, self.classes, generator=self.generator), labels)
        result = attack_layer(self.model, layer, images, criterion, self.attack)
        self.refreshes.append(RefreshEvent(
            step=step, layer=layer, generated=n, success_rate=result.success_rate,
            mean_distortion=result.summary()["mean_distortion"], seconds=time.perf_counter() - start,
        ))
        return result.adversarial, labels, result.success


def adversarial_train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, config: AdvTrainConfig,
                      recipe: training.TrainRecipe, *, seed: int = 0, attack: Callable | None = None,
                      desc: str = "adversarial training", progress: bool = True) -> TrainingLog:
    """Train ``model`` in place with ``recipe`` (epochs, optimizer, lr, batch size, weight decay) and
    the pools of ``config``; returns the log of pools and refreshes, the model left in eval mode.

    ``attack`` (default ``LBFGS(config.attack)``) is any callable with the attack contract
    ``attack(model, x, Targeted(t) or Untargeted(y)) -> AttackResult``. With
    ``config.layers`` empty this is plain training: the baselines. ``recipe.dropout`` acts as in
    :func:`~intriguing.training.fit`, so a zoo recipe with dropout trains the same network here.
    """
    check_images(images, "images")
    check_labels(labels, "labels", len(images))
    epochs = recipe.epochs
    if config.layers and epochs <= config.warmup_epochs:
        raise IntriguingError(
            f"epochs={epochs} leaves no adversarial training after warmup_epochs={config.warmup_epochs}; "
            "raise epochs or lower warmup_epochs"
        )
    steps_per_epoch = -(-len(images) // recipe.batch_size)
    trainer = _PoolTrainer(model, images, labels, config, attack or LBFGS(config.attack),
                           steps_per_epoch, seed)
    model.train()
    # Dropout draws from the global generator: seed it, then restore it.
    with training.hidden_dropout(model, recipe.dropout), seeding.seeded(seed):
        training.run_epochs(model.parameters(), trainer.loss, images, labels, epochs=epochs,
                            batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
                            weight_decay=training.decayed_weights(model, recipe.weight_decay),
                            generator=seeding.generator(seed), desc=desc, progress=progress,
                            on_step=trainer.after_step if config.layers else None)
    model.eval()
    return TrainingLog(steps=epochs * steps_per_epoch, pools=trainer.pools, refreshes=trainer.refreshes)

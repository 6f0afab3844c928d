"""Training the zoo, with a checkpoint cache keyed by the full configuration.

One minibatch loop (:func:`run_epochs`) serves both the supervised stage and the autoencoder's
unsupervised stage. The whole dataset lives in one tensor and minibatches are index slices: on
MNIST-sized data that is several times faster than a DataLoader.

Checkpoints are safetensors (never pickle) named by a hash of everything that determines the
weights: model name, recipe, data split, dataset content and seed. A second request for the same
configuration loads the file instead of training again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from intriguing import data, zoo
from intriguing.checkpoint import load_weights, read_metadata, save_model
from intriguing.errors import IntriguingError

CACHE_ENV = "INTRIGUING_CACHE"
CACHE_FORMAT = 1


@dataclass
class TrainResult:
    """What training measured: errors on the training split and on the test set, and the time taken."""

    name: str
    on: str
    seed: int
    train_error: float
    test_error: float
    seconds: float
    cache_key: str


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """Checkpoint folder: ``override``, else ``$INTRIGUING_CACHE``, else ``~/.cache/intriguing``."""
    chosen = override or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "intriguing"
    return Path(chosen).expanduser()


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model's weights: its hash names the checkpoint.

    ``limit`` trains on the first ``limit`` images of the split only and ``overrides`` replaces
    recipe fields (e.g. ``{"epochs": 2}``): both exist for quick runs (tests, the smoke preset).
    """

    name: str
    on: str = "train"
    seed: int = 0
    limit: int | None = None
    overrides: tuple[tuple[str, object], ...] = ()

    @property
    def recipe(self) -> zoo.TrainRecipe:
        try:
            return dataclasses.replace(zoo.spec(self.name).recipe, **dict(self.overrides))
        except TypeError as e:
            raise IntriguingError(f"recipe overrides {dict(self.overrides)} for {self.name}: {e}") from None

    def key(self, data_dir: str | os.PathLike | None = None) -> str:
        """Hash of the full configuration and the dataset's content; equal keys mean identical weights."""
        config = {
            "format": CACHE_FORMAT,
            "model": self.name,
            "recipe": dataclasses.asdict(self.recipe),
            "on": self.on,
            "seed": self.seed,
            "limit": self.limit,
            "data": data.fingerprint(data_dir),
        }
        return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _config(name: str, on: str, seed: int, limit: int | None, overrides: dict | None) -> TrainConfig:
    if on not in data.SPLITS:
        raise IntriguingError(f"unknown training split {on!r}: choose one of {', '.join(data.SPLITS)}")
    zoo.spec(name)  # unknown names fail here, listing the close matches
    return TrainConfig(name, on, seed, limit, tuple(sorted((overrides or {}).items())))


def checkpoint_path(config: TrainConfig, data_dir=None, cache=None) -> Path:
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in config.name)
    return cache_dir(cache) / "models" / f"{safe}-{config.on}-s{config.seed}-{config.key(data_dir)}.safetensors"


def weight_penalty(model: nn.Module, weight_decay: dict[str, float]) -> torch.Tensor:
    """The paper's per-layer weight decay ``sum_l lambda_l/2 * ||W_l||^2``: its gradient is ``lambda_l * W_l``."""
    modules = dict(model.named_modules())
    missing = [m for m in weight_decay if m not in modules]
    if missing:
        raise IntriguingError(f"weight_decay names layers {missing} that the model lacks; known: {list(modules)}")
    total = torch.zeros(())
    for module_name, lam in weight_decay.items():
        total = total + 0.5 * lam * modules[module_name].weight.pow(2).sum()
    return total


def run_epochs(
    parameters: Iterable[nn.Parameter],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    generator: torch.Generator,
    desc: str,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Adam (or SGD with Nesterov momentum 0.9) with a cosine-decayed learning rate over shuffled minibatches.

    ``on_step(steps_done)``, when given, runs after every optimizer step: the hook through which
    adversarial training refreshes its pool on a schedule without a second loop.
    """
    parameters = [p for p in parameters if p.requires_grad]
    n = len(inputs)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    if optimizer == "adam":
        step_rule = torch.optim.Adam(parameters, lr=lr)
    elif optimizer == "sgd":
        step_rule = torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True)
    else:
        raise IntriguingError(f"unknown optimizer {optimizer!r}: choose 'adam' or 'sgd'")
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(step_rule, T_max=max(total, 1))
    steps_done = 0
    with tqdm(total=total, desc=desc, disable=not progress, leave=False, unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                loss = loss_fn(inputs[batch], targets[batch])
                step_rule.zero_grad(set_to_none=True)
                loss.backward()
                step_rule.step()
                schedule.step()
                bar.update()
                steps_done += 1
                if on_step is not None:
                    on_step(steps_done)
            bar.set_postfix(loss=f"{loss.item():.4f}")


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: zoo.TrainRecipe,
    *,
    seed: int = 0,
    desc: str = "train",
    progress: bool = True,
) -> nn.Module:
    """Train ``model`` in place following ``recipe``; returns it in eval mode.

    Models with an ``unsupervised_loss`` method and ``recipe.pretrain_epochs`` > 0 (the
    autoencoder) first learn unsupervised; the modules in ``recipe.frozen`` are then frozen.
    """
    generator = torch.Generator().manual_seed(seed)
    model.train()
    if recipe.pretrain_epochs and hasattr(model, "unsupervised_loss"):

        def unsupervised(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            loss = model.unsupervised_loss(x, recipe.sparsity_target, recipe.sparsity_weight)
            return loss + weight_penalty(model, recipe.pretrain_weight_decay)

        run_epochs(model.parameters(), unsupervised, images, labels, epochs=recipe.pretrain_epochs,
                   batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
                   generator=generator, desc=f"{desc} (unsupervised)", progress=progress)
    modules = dict(model.named_modules())
    for frozen in recipe.frozen:
        modules[frozen].requires_grad_(False)

    def supervised(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = nn.functional.cross_entropy(model(x), y)
        return loss + weight_penalty(model, recipe.weight_decay)

    run_epochs(model.parameters(), supervised, images, labels, epochs=recipe.epochs,
               batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer, generator=generator,
               desc=desc, progress=progress)
    model.requires_grad_(True)
    return model.eval()


@torch.no_grad()
def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 10_000) -> float:
    """Fraction of ``images`` the model misclassifies (batched, no gradients)."""
    wrong = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        wrong += int((logits.argmax(1) != labels[start : start + batch_size]).sum())
    return wrong / len(images)


def train(name: str, on: str = "train", seed: int = 0, *, limit: int | None = None, overrides: dict | None = None,
          data_dir=None, progress: bool = True) -> tuple[nn.Module, TrainResult]:
    """Train zoo model ``name`` on split ``on`` from scratch (no cache); returns the model and its errors."""
    config = _config(name, on, seed, limit, overrides)
    images, labels = data.load_mnist(on, data_dir)
    images, labels = images[:limit], labels[:limit]
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = zoo.build(name)
    fit(model, images, labels, config.recipe, seed=seed, desc=f"train {name} on {on}", progress=progress)
    seconds = time.perf_counter() - start
    test_images, test_labels = data.load_mnist("test", data_dir)
    result = TrainResult(
        name=name, on=on, seed=seed,
        train_error=error_rate(model, images, labels),
        test_error=error_rate(model, test_images, test_labels),
        seconds=seconds, cache_key=config.key(data_dir),
    )
    return model, result


def trained_with_result(name: str, on: str = "train", seed: int = 0, *, limit: int | None = None,
                        overrides: dict | None = None, data_dir=None, cache=None,
                        progress: bool = True) -> tuple[nn.Module, TrainResult]:
    """Like :func:`trained`, also returning the :class:`TrainResult` stored with the checkpoint."""
    path = checkpoint_path(_config(name, on, seed, limit, overrides), data_dir, cache)
    if path.is_file():
        model = load_weights(zoo.build(name), path).eval()
        return model, TrainResult(**json.loads(read_metadata(path)["result"]))
    model, result = train(name, on, seed, limit=limit, overrides=overrides, data_dir=data_dir, progress=progress)
    save_model(model, path, {"result": json.dumps(dataclasses.asdict(result))})
    return model, result


def trained(name: str, on: str = "train", seed: int = 0, **kwargs) -> nn.Module:
    """Zoo model ``name`` trained on ``on`` with ``seed``, in eval mode: loaded from the cache or trained.

    Keyword arguments: ``limit`` and ``overrides`` (quick runs, see :class:`TrainConfig`),
    ``data_dir``, ``cache`` (checkpoint folder) and ``progress``.
    """
    return trained_with_result(name, on, seed, **kwargs)[0]

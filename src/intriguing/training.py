"""Training: one minibatch loop for every model and stage, and the recipe that configures it.

One minibatch loop (:func:`run_epochs`) serves the supervised stage, the autoencoder's unsupervised
stage and adversarial training (through its ``on_step`` hook). The whole dataset lives in one tensor
and minibatches are index slices: on MNIST-sized data that is several times faster than a
DataLoader. Which model to train, and caching the result, is :mod:`intriguing.zoo`'s job.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from intriguing import seeding
from intriguing.errors import IntriguingError, check_count, check_greater, check_images, check_labels, check_non_negative
from intriguing.numerics import zero_subnormal_weights_

# The modules whose outputs are a network's hidden layers: dropout follows them.
HIDDEN_ACTIVATIONS = (nn.Sigmoid, nn.ReLU, nn.Tanh)


@dataclass(frozen=True)
class TrainRecipe:
    """How a zoo model is trained: every field enters the checkpoint cache key.

    ``weight_decay`` maps a module name to the paper's lambda for that layer's weight. For models
    with an unsupervised stage (the autoencoder) the ``pretrain_*`` fields describe that stage,
    after which the modules in ``frozen`` stop learning. ``dropout`` > 0 drops that fraction of every
    hidden layer's units during supervised training (Hinton et al. 2012; the paper's Section 4.1
    compares it with weight decay); 0 trains without dropout.
    """

    epochs: int
    weight_decay: dict[str, float]
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"
    pretrain_epochs: int = 0
    pretrain_weight_decay: dict[str, float] = field(default_factory=dict)
    sparsity_target: float = 0.05
    sparsity_weight: float = 0.0
    frozen: tuple[str, ...] = ()
    dropout: float = 0.0

    def __post_init__(self) -> None:
        """Every number checked once, here: a bad one would fail minutes into training, or (a negative epoch
        count, a negative weight decay) train something else silently."""
        check_count("epochs", self.epochs, smallest=0)
        check_count("pretrain_epochs", self.pretrain_epochs, smallest=0)
        check_count("batch_size", self.batch_size)
        check_greater("lr", self.lr, what="learning rate")
        for field_name in ("weight_decay", "pretrain_weight_decay"):
            for layer, lam in getattr(self, field_name).items():
                check_non_negative(f"{field_name}[{layer!r}]", lam)
        check_non_negative("sparsity_target", self.sparsity_target)
        check_non_negative("sparsity_weight", self.sparsity_weight)
        if not 0.0 <= self.dropout < 1.0:
            raise IntriguingError(f"TrainRecipe dropout must lie in [0, 1), got {self.dropout}: "
                                  "it is the fraction of hidden units dropped, 0 for none")


def decayed_weights(model: nn.Module, weight_decay: dict[str, float]) -> list[tuple[nn.Parameter, float]]:
    """The weights of the paper's per-layer weight decay ``sum_l lambda_l/2 * ||W_l||^2``, each with its
    ``lambda_l``: :func:`run_epochs` adds the penalty's gradient ``lambda_l * W_l`` to theirs."""
    modules = dict(model.named_modules())
    missing = [m for m in weight_decay if m not in modules]
    if missing:
        raise IntriguingError(f"weight_decay names layers {missing} that the model lacks; known: {list(modules)}")
    return [(modules[name].weight, lam) for name, lam in weight_decay.items() if lam]


def hidden_activations(model: nn.Module) -> list[str]:
    """Names of a sequential model's hidden activation modules (``h1``, ``h2`` in the zoo's nets):
    the outputs that dropout acts on."""
    if not isinstance(model, nn.Sequential):
        return []
    return [name for name, module in model.named_children() if isinstance(module, HIDDEN_ACTIVATIONS)]


@contextlib.contextmanager
def hidden_dropout(model: nn.Module, p: float) -> Iterator[None]:
    """Within the block, dropout with rate ``p`` follows every hidden layer of ``model`` in train mode.

    Forward hooks rather than ``nn.Dropout`` modules, so the trained model's modules, state dict and
    checkpoints are those of the architecture without dropout (dropout has no weights; at test time
    inverted dropout is the identity). Dropout draws from torch's global generator: seed it around
    training. ``p`` = 0 does nothing.
    """
    if not p:
        yield
        return
    names = hidden_activations(model)
    if not names:
        raise IntriguingError(f"dropout={p}: {type(model).__name__} has no hidden activation layers to follow; "
                              "use dropout=0 for this model")
    modules = dict(model.named_children())

    def drop(module: nn.Module, _: tuple, output: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(output, p, training=module.training)

    handles = [modules[name].register_forward_hook(drop) for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


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
    weight_decay: Sequence[tuple[nn.Parameter, float]] = (),
    generator: torch.Generator,
    desc: str,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> None:
    """Adam (or SGD with Nesterov momentum 0.9) with a cosine-decayed learning rate over shuffled minibatches.

    ``weight_decay`` pairs (from :func:`decayed_weights`) add the gradient of the paper's penalty,
    ``lambda * W``, to each weight's gradient after the backward pass: the same update as putting
    ``lambda/2 * ||W||^2`` in the loss, without a second graph through every weight (on the zoo's
    sigmoid nets that graph cost a third of each step). ``on_step(steps_done)``, when given, runs after
    every optimizer step: the hook through which adversarial training refreshes its pool on a schedule
    without a second loop. Image batches (4-D) are fed channels-last, the layout oneDNN's convolutions
    run fastest in; :func:`fit` puts the model in it.
    """
    parameters = [p for p in parameters if p.requires_grad]
    decayed = [(weight, lam) for weight, lam in weight_decay if weight.requires_grad]
    layout = torch.channels_last if inputs.dim() == 4 else torch.contiguous_format
    n = len(inputs)
    steps_per_epoch = -(-n // batch_size)
    total = epochs * steps_per_epoch
    if optimizer == "adam":
        step_rule = torch.optim.Adam(parameters, lr=lr, fused=True)
    elif optimizer == "sgd":
        step_rule = torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, fused=True)
    else:
        raise IntriguingError(f"unknown optimizer {optimizer!r}: choose 'adam' or 'sgd'")
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(step_rule, T_max=max(total, 1))
    steps_done = 0
    with tqdm(total=total, desc=desc, disable=None if progress else True, leave=False,
              unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(n, generator=generator)
            for start in range(0, n, batch_size):
                batch = order[start : start + batch_size]
                x = inputs.index_select(0, batch).contiguous(memory_format=layout)
                loss = loss_fn(x, targets.index_select(0, batch))
                for weight in parameters:  # zero_grad(set_to_none=True), without its per-step bookkeeping
                    weight.grad = None  # (4% of an FC100-100-10 step at batch 64: 1.26 -> 1.20 ms)
                loss.backward()
                for weight, lam in decayed:
                    if weight.grad is None:  # a weight the loss leaves out: the penalty is its whole gradient
                        weight.grad = lam * weight.detach()
                    else:
                        weight.grad.add_(weight, alpha=lam)
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
    recipe: TrainRecipe,
    *,
    seed: int = 0,
    desc: str = "train",
    progress: bool = True,
) -> nn.Module:
    """Train ``model`` in place following ``recipe``; returns it in eval mode.

    Models with an ``unsupervised_loss`` method and ``recipe.pretrain_epochs`` > 0 (the
    autoencoder) first learn unsupervised; the modules in ``recipe.frozen`` are then frozen.
    """
    modules = dict(model.named_modules())
    missing = [name for name in recipe.frozen if name not in modules]
    if missing:
        raise IntriguingError(f"frozen names layers {missing} that the model lacks; known: {list(modules)}")
    generator = torch.Generator().manual_seed(seed)
    model.train()
    if recipe.pretrain_epochs and hasattr(model, "unsupervised_loss"):

        def unsupervised(x: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
            return model.unsupervised_loss(x, recipe.sparsity_target, recipe.sparsity_weight)

        run_epochs(model.parameters(), unsupervised, images, labels, epochs=recipe.pretrain_epochs,
                   batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
                   weight_decay=decayed_weights(model, recipe.pretrain_weight_decay),
                   generator=generator, desc=f"{desc} (unsupervised)", progress=progress)
    for frozen in recipe.frozen:
        modules[frozen].requires_grad_(False)

    def supervised(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)

    if images.dim() == 4:
        model.to(memory_format=torch.channels_last)  # run_epochs feeds image batches channels-last
    with hidden_dropout(model, recipe.dropout), seeding.seeded(seed):
        run_epochs(model.parameters(), supervised, images, labels, epochs=recipe.epochs,
                   batch_size=recipe.batch_size, lr=recipe.lr, optimizer=recipe.optimizer,
                   weight_decay=decayed_weights(model, recipe.weight_decay), generator=generator,
                   desc=desc, progress=progress)
    model.to(memory_format=torch.contiguous_format)  # what checkpoints store and every caller expects
    model.requires_grad_(True)
    zero_subnormal_weights_(model)  # weight decay leaves some there; they slow every later evaluation
    return model.eval()


@torch.no_grad()
def error_rate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 10_000) -> float:
    """Fraction of ``images`` the model misclassifies (batched, no gradients)."""
    check_images(images, "images", (-math.inf, math.inf))  # also hidden layers' activations (advtrain)
    check_labels(labels, "labels", len(images))
    wrong = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        wrong += int((logits.argmax(1) != labels[start : start + batch_size]).sum())
    return wrong / len(images)

"""The zoo's training step against the textbook PyTorch loop, side by side in one run (issue 14).

Training the default preset's 16 models was about 1,800 s of CPU, the larger part of the run. Both
loops below train the same zoo architecture with the zoo recipe's optimiser, learning rate, batch and
per-layer weight decay, from the same initial weights, on the same shuffled MNIST minibatches:

- *textbook*: the same cosine learning-rate schedule, the penalty ``lambda/2 * ||W||^2`` in the loss (autograd builds a graph through every
  decayed weight), ``torch.optim.Adam`` with its defaults, minibatches by advanced indexing;
- *ours*: :func:`intriguing.training.fit` (through :func:`~intriguing.training.run_epochs`: the
  penalty's gradient added to the weights' gradients, fused Adam, ``index_select``, convolutions
  channels-last).

Times are process CPU times per step at one thread with subnormals flushed, the least of
``--repeat`` alternating runs (other processes only ever add time). It prints both, their ratio,
and each loop's weights' distance after the same steps (the two are the same algorithm, so only
float rounding separates them).

Usage: ``python benchmarks/training_step.py [--steps 300] [--repeat 3] [--models FC100-100-10 ConvNet]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
from torch import nn

from intriguing import data, numerics, training, zoo


def textbook(model: nn.Module, recipe: training.TrainRecipe, x: torch.Tensor, y: torch.Tensor) -> None:
    modules = dict(model.named_modules())
    adam = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=-(-len(x) // recipe.batch_size))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    for start in range(0, len(x), recipe.batch_size):
        batch = order[start : start + recipe.batch_size]
        loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
        loss = loss + sum(0.5 * lam * modules[name].weight.pow(2).sum() for name, lam in recipe.weight_decay.items())
        adam.zero_grad(set_to_none=True)
        loss.backward()
        adam.step()
        cosine.step()


def ours(model: nn.Module, recipe: training.TrainRecipe, x: torch.Tensor, y: torch.Tensor) -> None:
    """One epoch of :func:`~intriguing.training.fit` itself (seed 0: textbook's minibatch order)."""
    training.fit(model, x, y, dataclasses.replace(recipe, epochs=1), seed=0, progress=False)


def timed(loop, name: str, x: torch.Tensor, y: torch.Tensor) -> tuple[float, nn.Module]:
    """CPU seconds per step of ``loop`` on a freshly initialised zoo ``name``, and the trained model."""
    model = zoo.build(name, seed=0)
    start = time.process_time()
    loop(model, zoo.spec(name).recipe, x, y)
    return (time.process_time() - start) * zoo.spec(name).recipe.batch_size / len(x), model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["FC100-100-10", "ConvNet"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    numerics.flush_subnormals()
    images, labels = data.load_mnist("train")
    for name in args.models:
        batch = zoo.spec(name).recipe.batch_size
        x, y = images[: args.steps * batch], labels[: args.steps * batch]
        best = {"textbook": float("inf"), "ours": float("inf")}
        trained = {}
        for _ in range(args.repeat):
            for loop_name, loop in (("textbook", textbook), ("ours", ours)):
                seconds, trained[loop_name] = timed(loop, name, x, y)
                best[loop_name] = min(best[loop_name], seconds)
        apart = max(float((a - b).abs().max().detach()) for a, b in zip(trained["textbook"].parameters(),
                                                               trained["ours"].parameters(), strict=True))
        print(f"{name:14s} batch {batch:4d}: textbook {best['textbook'] * 1e6:8.0f} us/step, "
              f"ours {best['ours'] * 1e6:8.0f} us/step, ratio ours/textbook {best['ours'] / best['textbook']:.2f}; "
              f"after {args.steps} steps the weights differ by at most {apart:.1e}")


if __name__ == "__main__":
    main()

"""Every random draw of the toolkit, seeded in one place: same seed, same numbers, in any process.

Model initialisation draws from torch's global generator, so :func:`seeded` seeds it inside a
block and restores it after (the caller's random state is left as it was). Everything else draws
from an explicit generator made by :func:`generator` or ``numpy.random.default_rng(seed)``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from intriguing.errors import IntriguingError, check_labels


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global generator seeded by ``seed``, restoring its state afterwards.

    Used around model construction (``nn.Linear`` draws its initial weights from the global
    generator) and around training with dropout.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def generator(seed: int) -> torch.Generator:
    """A CPU torch generator seeded by ``seed``."""
    return torch.Generator().manual_seed(seed)


def random_targets(labels: torch.Tensor, num_classes: int, seed: int | None = None, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """One target class per example, uniform over the ``num_classes - 1`` classes other than its label.

    Section 4.1 attacks each example towards a class ``l`` different from its label; the paper
    does not say how ``l`` is chosen, so it is drawn at random. Give ``seed`` or a ``generator``
    (for a stream of draws, e.g. successive adversarial-training pools).
    """
    if (seed is None) == (generator is None):
        raise IntriguingError("random_targets: give exactly one of seed= or generator=")
    if num_classes < 2:
        raise IntriguingError(f"random_targets: a target class differs from the label, so it needs at least 2 classes; "
                              f"got num_classes={num_classes}")
    check_labels(labels, "labels", len(labels), num_classes)
    draw_from = generator if generator is not None else torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=draw_from)
    return (labels + shift.to(labels.device)) % num_classes


def example_indices(total: int, n: int | None, seed: int) -> torch.Tensor:
    """A seeded random choice of ``n`` of ``total`` examples, sorted (``None`` or ``n >= total``: all)."""
    if n is None or n >= total:
        return torch.arange(total)
    if n <= 0:
        raise IntriguingError(f"examples: expected a positive number of examples, got {n}")
    chosen = np.random.default_rng(seed).permutation(total)[:n]
    return torch.from_numpy(np.sort(chosen))

"""What counts as an adversarial example: reaching a chosen class, or leaving the true one.

The paper (Section 4.1, Eq. 1) asks for the smallest ``r`` with ``f(x + r) = l`` inside the box.
Two criteria follow, one object each, so that no ``targeted`` flag travels through the code:

* :class:`Targeted` (``targets`` given): a success is ``argmax f(x') = l``;
* :class:`Untargeted` (``labels`` given, the true classes): a success is ``argmax f(x') != y``.

Every test of success takes the classes per row, so the solver can stream rows of many examples
through one criterion; ``classes`` defaults to the criterion's own (one per input).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from intriguing.errors import IntriguingError, check_labels

# During a search a point counts as adversarial only if its success margin exceeds this many logits.
# The final verification is a forward pass at another batch size, and a model's logits change by a
# few 1e-6 with the batch size (blocked matrix products): 1e-4 guarantees that it confirms.
SAFE_MARGIN = 1e-4


def success_margin(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far each row is into (> 0) or short of (< 0) success, in logits.

    Targeted: ``z_goal - max_{j != goal} z_j``; untargeted (``goal`` = true class):
    ``max_{j != goal} z_j - z_goal``. A tie gives 0, which is not a success.
    """
    own = logits.gather(1, goal[:, None])[:, 0]
    best_other = logits.scatter(1, goal[:, None], -math.inf).amax(1)
    return own - best_other if targeted else best_other - own


def safe(finite: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Rows with finite logits (``finite``) and a success ``margin`` above ``SAFE_MARGIN``."""
    return finite & (margin > SAFE_MARGIN)


def reached(logits: torch.Tensor, goal: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Which rows of ``logits`` count as adversarial: the target is the top class, or the true class is not."""
    predicted = logits.argmax(1)
    return predicted == goal if targeted else predicted != goal


class Criterion:
    """Success for a batch of ``N`` inputs: ``classes`` (N,) int64 are the targets or the true labels."""

    targeted: ClassVar[bool]
    argument: ClassVar[str]  # the keyword that names ``classes`` in error messages

    def __init__(self, classes: torch.Tensor):
        self.classes = classes

    def margin(self, logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Logits by which each row is into (> 0) or short of (< 0) success."""
        return success_margin(logits, self.classes if classes is None else classes, self.targeted)

    def reached(self, logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Rows whose top class is a success (as the verification counts it)."""
        return reached(logits, self.classes if classes is None else classes, self.targeted)

    def safely_reached(self, logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
        """Rows a search may record as adversarial: finite logits and a margin above ``SAFE_MARGIN``."""
        return safe(torch.isfinite(logits).all(1), self.margin(logits, classes))

    def checked(self, n: int, num_classes: int, device: torch.device) -> Criterion:
        """This criterion with ``classes`` checked against the batch and the model, as int64 on ``device``."""
        check_labels(self.classes, self.argument, n, num_classes)
        return type(self)(self.classes.to(device=device, dtype=torch.int64))

    def rows(self, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The search's rows: ``(example, goal, classes)`` per row, grouped by example."""
        raise NotImplementedError

    def reported_target(self, predicted: torch.Tensor) -> torch.Tensor:
        """The class each result reached (``predicted``: the model's class of each result)."""
        raise NotImplementedError


class Targeted(Criterion):
    """Reach ``targets`` (N,): a success is classified as the target (Section 4.1, ``f(x + r) = l``).

    Give ``labels`` (the true classes) too and a target equal to its label is refused: the attack
    would report a success at distortion 0 and drag every mean distortion down.
    """

    targeted = True
    argument = "target"

    def __init__(self, targets: torch.Tensor, labels: torch.Tensor | None = None):
        super().__init__(targets)
        self.labels = labels

    def checked(self, n: int, num_classes: int, device: torch.device) -> Targeted:
        checked = super().checked(n, num_classes, device)
        if self.labels is not None:
            check_labels(self.labels, "labels", n, num_classes)
            _refuse_own_label(checked.classes, self.labels.to(device=device, dtype=torch.int64))
        return checked

    def rows(self, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row per input, aimed at its target."""
        example = torch.arange(len(self.classes), device=self.classes.device)
        return example, self.classes, self.classes

    def reported_target(self, predicted: torch.Tensor) -> torch.Tensor:
        return self.classes.clone()


class Untargeted(Criterion):
    """Leave the true ``labels`` (N,): a success is classified as any other class.

    The search runs one targeted row per class ``l != y`` (N * (K - 1) rows) and records any
    point no longer classified as ``y``: the closest misclassified point lies on the border of
    some class ``l``'s region, so nothing is lost against the targeted attack towards any ``l``.
    """

    targeted = False
    argument = "labels"

    def rows(self, num_classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One row per input and class other than its label, grouped by input."""
        n, device = len(self.classes), self.classes.device
        classes = torch.arange(num_classes, device=device).expand(n, num_classes)
        others = classes != self.classes[:, None]
        example = torch.arange(n, device=device)[:, None].expand(n, num_classes)[others]  # (N * (K - 1),)
        return example, classes[others], self.classes[example]

    def reported_target(self, predicted: torch.Tensor) -> torch.Tensor:
        return predicted


def _refuse_own_label(targets: torch.Tensor, labels: torch.Tensor) -> None:
    same = (targets == labels).nonzero().squeeze(1)
    if len(same):
        first = ", ".join(str(i) for i in same[:5].tolist()) + (", ..." if len(same) > 5 else "")
        raise IntriguingError(
            f"target/labels: {len(same)} of {len(targets)} targets equal their true label (examples {first}); "
            "a targeted attack must aim at another class: draw targets with "
            "intriguing.seeding.random_targets(labels, num_classes, seed=...), or pass labels= alone "
            "for an untargeted attack"
        )


def criterion_of(criterion: Criterion | None, target: torch.Tensor | None,
                 labels: torch.Tensor | None) -> Criterion:
    """The criterion given as an object or by the ``target=`` / ``labels=`` shorthand (not both)."""
    if criterion is not None:
        if not isinstance(criterion, Criterion):
            raise IntriguingError(
                f"criterion: expected Targeted(targets) or Untargeted(labels), got {type(criterion).__name__}")
        if target is not None or labels is not None:
            raise IntriguingError("criterion: give a criterion object or target=/labels=, not both")
        return criterion
    if target is not None:
        return Targeted(target, labels)
    if labels is not None:
        return Untargeted(labels)
    raise IntriguingError(
        "target/labels: pass target=classes for a targeted attack, or labels=true classes for an "
        "untargeted one (or a criterion: Targeted(targets) / Untargeted(labels))"
    )

"""A network as a graph of layers, and how per-layer Lipschitz constants compose over it (Section 4.3).

The paper bounds a chain of layers by the product of their upper Lipschitz constants. The same
argument extends to any directed acyclic graph of maps: if every node ``v`` knows a constant
``L_v`` with ``||v(x) - v(x')|| <= L_v ||x - x'||`` for the network input ``x``, then

* a layer ``y = f(u)`` of constant ``c`` has ``L_y <= c L_u`` (the chain rule of the paper);
* a sum ``y = a u + b w`` (a residual addition) has ``L_y <= |a| L_u + |b| L_w``, by the
  triangle inequality, so bounds add along parallel paths;
* a concatenation ``y = [u, w]`` has ``L_y <= sqrt(L_u^2 + L_w^2)``, since the squared norms add;
* a term broadcast to ``k`` times its size (e.g. ``(C, 1, 1)`` added to ``(C, H, W)``) repeats
  each entry ``k`` times, which multiplies its norm by ``sqrt(k)``.

:class:`LayerGraph` holds these steps in execution order; :meth:`LayerGraph.compose` evaluates
the rule for any per-layer constants (the bounds, or the exact norms). For a chain it is the
product, evaluated in the same order as the paper's, so chains give the same numbers as before.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class LayerCall:
    """One call of a layer during the traced forward pass (shapes without the batch dimension).

    ``kind`` names what the row shows when it is not the module's class: a functional operation
    (``"torch.flatten"``, ``"F.relu"``) stood in for by an equivalent module, or a batch norm folded
    into its convolution (``"Conv2d+BatchNorm2d"``).
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    kind: str = ""

    @property
    def label(self) -> str:
        """What kind of layer this is, for the table: ``kind`` or the module's class name."""
        return self.kind or type(self.module).__name__


INPUT, LAYER, SUM, CONCAT = "input", "layer", "sum", "concat"


@dataclass(frozen=True)
class Step:
    """One node of the graph: the input, a layer (``call``), a weighted sum or a concatenation.

    ``sources`` index earlier steps; ``weights`` multiply their constants (the ``|a|`` of a sum and
    the ``sqrt(k)`` of a broadcast). A layer has one source.
    """

    how: str
    sources: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    call: LayerCall | None = None


@dataclass(frozen=True)
class LayerGraph:
    """The steps of a forward pass in execution order; ``output`` indexes the step the network returns."""

    steps: tuple[Step, ...]
    output: int

    @property
    def calls(self) -> list[LayerCall]:
        """The layers, in execution order: the rows of the table."""
        return [step.call for step in self.steps if step.call is not None]

    @property
    def is_chain(self) -> bool:
        """Whether the network is a chain of layers (then :meth:`compose` is the paper's product)."""
        return all(step.how in (INPUT, LAYER) for step in self.steps) and all(
            step.sources == (i - 1,) for i, step in enumerate(self.steps) if step.how == LAYER
        ) and self.output == len(self.steps) - 1

    def merges(self) -> dict[str, int]:
        """How many sums of two or more branches and concatenations the graph has (for the report)."""
        return {how: sum(step.how == how and len(step.sources) > 1 for step in self.steps) for how in (SUM, CONCAT)}

    def compose(self, constants: Sequence[float]) -> float:
        """An upper Lipschitz constant of the whole network from one constant per layer (in :attr:`calls` order).

        Walks the steps once, applying the rules of the module docstring; for a chain the result is
        ``((1 * c_1) * c_2) * ...``, the product of the paper's Section 4.3.
        """
        constants = iter(constants)
        values: list[float] = []
        for step in self.steps:
            terms = [w * values[s] for s, w in zip(step.sources, step.weights)]
            if step.how == INPUT:
                values.append(1.0)
            elif step.how == LAYER:
                values.append(float(next(constants)) * terms[0])
            elif step.how == SUM:
                values.append(math.fsum(terms) if len(terms) > 1 else terms[0] if terms else 0.0)
            else:
                values.append(math.sqrt(math.fsum(t * t for t in terms)))
        return values[self.output]


def fold_batch_norms(graph: LayerGraph) -> LayerGraph:
    """Each batch norm that directly follows a convolution (the convolution's only user) folded into it.

    At evaluation ``BN(conv(x))`` is one convolution with filters scaled by ``gamma / sqrt(var + eps)``
    (plus a bias, irrelevant to a Lipschitz constant); bounding that convolution is tighter than the
    product of the two layers' constants, and exact for its norm.
    """
    users = [0] * len(graph.steps)
    for step in graph.steps:
        for s in step.sources:
            users[s] += 1
    users[graph.output] += 1
    steps = list(graph.steps)
    merged: dict[int, int] = {}  # folded convolution step -> batch-norm step that replaces it
    for i, step in enumerate(steps):
        source = step.sources[0] if step.how == LAYER else None
        if source is None or not _foldable(steps[source], step, users[source]):
            continue
        conv, norm = steps[source].call, step.call
        folded = LayerCall(f"{conv.name}+{norm.name}", folded_convolution(conv.module, norm.module),
                           conv.input_shape, norm.output_shape, f"{conv.label}+{norm.label}")
        steps[i] = replace(step, sources=steps[source].sources, weights=steps[source].weights, call=folded)
        merged[source] = i
    if not merged:
        return graph
    keep = [i for i in range(len(steps)) if i not in merged]
    index = {old: new for new, old in enumerate(keep)}
    renamed = [replace(steps[i], sources=tuple(index[s] for s in steps[i].sources)) for i in keep]
    return LayerGraph(tuple(renamed), index[graph.output])


def _foldable(previous: Step, step: Step, users: int) -> bool:
    return (previous.how == LAYER and users == 1 and isinstance(previous.call.module, nn.Conv2d)
            and not previous.call.kind and isinstance(step.call.module, nn.BatchNorm2d)
            and step.call.module.running_var is not None)


def folded_convolution(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` whose filters are scaled by ``norm``'s evaluation-time factors (bias dropped)."""
    scale = (norm.running_var.detach().double() + norm.eps).rsqrt()
    if norm.weight is not None:
        scale = scale * norm.weight.detach().double()
    folded = copy.deepcopy(conv)
    folded.bias = None
    with torch.no_grad():
        folded.weight = nn.Parameter((conv.weight.detach().double() * scale[:, None, None, None]).to(conv.weight.dtype),
                                     requires_grad=False)
    return folded

"""``phi(x)``: the activations of any named layer of any model, read through a forward hook.

Section 3 of the paper looks at the images that maximise ``<phi(x), v>`` for a layer ``phi``; the
layer is named as in ``model.named_modules()`` ("h1", "features", "pool1"), so any model works,
not only the zoo's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from intriguing.errors import IntriguingError, check_images, unknown_name_error


def find_layer(model: nn.Module, layer: str) -> nn.Module:
    """The submodule named ``layer`` (a ``model.named_modules()`` name); an unknown name lists the valid ones."""
    modules = {name: module for name, module in model.named_modules() if name}
    if layer not in modules:
        raise unknown_name_error("layer", layer, modules)
    return modules[layer]


@torch.no_grad()
def layer_activations(model: nn.Module, images: torch.Tensor, layer: str, *, batch_size: int = 1000) -> torch.Tensor:
    """``phi(x)`` for every image: the output of module ``layer``, flattened to (N, d) float32.

    The model runs in eval mode (its mode is restored afterwards) over batches of ``images`` in
    [0, 1]. A convolutional output (N, C, H, W) becomes C*H*W units, one per channel and position.
    """
    check_images(images, "images")
    module = find_layer(model, layer)
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, torch.Tensor):
            raise IntriguingError(
                f"layer {layer!r} outputs a {type(output).__name__}, not a tensor; "
                "choose a module whose output is one tensor"
            )
        outputs.append(output.detach().flatten(1).float())

    handle = module.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    batches = 0
    try:
        for start in range(0, len(images), batch_size):
            model(images[start : start + batch_size])
            batches += 1
    finally:
        handle.remove()
        model.train(was_training)
    if len(outputs) != batches:
        raise IntriguingError(
            f"layer {layer!r} ran {len(outputs)} times in {batches} forward passes; "
            "choose a layer that runs exactly once per forward pass"
        )
    return torch.cat(outputs)

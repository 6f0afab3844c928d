"""One way to name a model, for every command and analysis: the user's own classifiers included.

A *model specification* is one of

* a zoo name (``FC100-100-10``, ``ConvNet``, ...: see :mod:`intriguing.zoo`): the trained model from
  the zoo's cache (trained on first use), or the untrained architecture with ``untrained=True``, or
  the architecture with your ``weights``;
* a built-in architecture (``alexnet``, ``alexnet-grouped``: seeded random weights, or yours;
  ``efficientnet-lite0``: ImageNet-pretrained, with the ``imagenet`` extra);
* ``path/to/file.py:factory`` or ``package.module:factory``: ``factory()`` returns your ``nn.Module``.

Weights come from safetensors (:func:`intriguing.checkpoint.load_weights`) or from a PyTorch state
dict (``.pt`` / ``.pth``) read only with ``torch.load(weights_only=True)``: a file that needs a full
unpickle could run arbitrary code, so it is refused with a note on how to re-save it.

Preprocessing is part of the model (:class:`Preprocessed`): resizing to the network's input size and
``(x - mean) / std`` happen inside ``forward``, so every attack and analysis works on pixels in the
box [0, 1] and measures distortion there, as the paper does (Section 4.1).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from intriguing import alexnet as _alexnet
from intriguing import efficientnet as _efficientnet
from intriguing import seeding, zoo
from intriguing.architectures import INPUT_SHAPE as MNIST_SHAPE
from intriguing.checkpoint import load_weights, read_state_dict
from intriguing.devices import resolve_device
from intriguing.errors import IntriguingError, unknown_name_error
from intriguing.preprocessing import Preprocessed, channel_vector, positive_int, size_pair



@dataclass(frozen=True)
class Builtin:
    """A built-in architecture: how to build it (seeded), its input shape and what it is.

    ``weights`` says which weights ``build()`` gives when they are not seeded random ones (a pretrained
    network); ``mean``/``std`` are then the normalisation those weights expect, used unless given.
    """

    description: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    weights: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


BUILTINS: dict[str, Builtin] = {
    "alexnet": Builtin("AlexNet with the layer sizes of Table 5 (Krizhevsky et al. 2012)",
                       lambda: _alexnet.untrained(groups=1), _alexnet.INPUT_SHAPE),
    "alexnet-grouped": Builtin("AlexNet with the original two-GPU grouping of conv2, conv4 and conv5",
                               lambda: _alexnet.untrained(groups=2), _alexnet.INPUT_SHAPE),
    "efficientnet-lite0": Builtin(f"EfficientNet-Lite0 (Tan & Le 2019), ImageNet-pretrained; needs "
                                  f"{_efficientnet.EXTRA}",
                                  _efficientnet.efficientnet_lite0, _efficientnet.INPUT_SHAPE,
                                  weights="ImageNet-pretrained weights", mean=_efficientnet.MEAN,
                                  std=_efficientnet.STD),
}


def register_architecture(name: str, build: Callable[[], nn.Module], input_shape: tuple[int, int, int],
                          description: str) -> None:
    """Make ``name`` a built-in architecture (what ``build()`` returns, for inputs ``input_shape``), so
    that every command accepts it as MODEL; trained models with a recipe belong in :func:`zoo.register`."""
    if name in zoo.names() or ":" in name:
        raise IntriguingError(f"architecture {name!r}: the name is a zoo model's or contains ':'; choose another")
    BUILTINS[name] = Builtin(description, build, tuple(input_shape))


def catalogue() -> list[tuple[str, str, str]]:
    """``(name, kind, description)`` of every named model: the built-in architectures, then the zoo."""
    rows = [(name, "architecture", b.description) for name, b in BUILTINS.items()]
    return rows + [(name, "zoo", zoo.spec(name).description) for name in zoo.names()]


@dataclass
class LoadedModel:
    """A resolved model: ``model`` maps pixels in [0, 1] to logits, in eval mode, on its device.

    ``input_shape`` is the network's own input ``(C, H, W)``: the size at which to load images (the
    model also accepts other sizes and resizes them). ``class_names[i]`` names logit ``i``.
    """

    model: Preprocessed
    input_shape: tuple[int, int, int]
    class_names: list[str]
    description: str
    device: torch.device = torch.device("cpu")

    @property
    def network(self) -> nn.Module:
        """The network without its preprocessing: where layer names (for hooks) refer to."""
        return self.model.network

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_index(self, name: str | int) -> int:
        """The index of a class given by name (``"ostrich"``) or index (``9`` or ``"9"``)."""
        return class_index(self.class_names, name)


def class_index(class_names: Sequence[str], name: str | int) -> int:
    """Index of class ``name`` in ``class_names``; an index is accepted as is (range-checked).

    A name is matched exactly, then ignoring case, spaces and underscores; a name held by several
    classes (ImageNet has two "crane"s) is an error listing their indices.
    """
    text = str(name).strip()
    found = class_matches(class_names, text)
    if len(found) > 1:
        listed = ", ".join(map(str, found))
        raise IntriguingError(f"class {text!r} names {len(found)} classes ({listed}); give the index")
    if found:
        return found[0]
    if text.lstrip("-").isdigit():
        raise IntriguingError(f"class index {int(text)}: the model has classes 0 to {len(class_names) - 1}")
    raise _unknown_class(text, class_names)


def class_matches(class_names: Sequence[str], name: str, keys: Sequence[str] | None = None) -> list[int]:
    """Every index ``name`` may mean: the classes named exactly so, else those equal under :func:`name_key`
    (``keys``: the class names' keys, for a caller matching many names), else ``name`` read as an index in
    range; none is ``[]``, several are ambiguous (ImageNet has two "crane"s)."""
    found = [i for i, c in enumerate(class_names) if c == name]
    if not found and not (name.startswith("-") and name[1:].isdigit()):  # name_key would read "-1" as "1"
        key = name_key(name)
        found = [i for i, k in enumerate(keys if keys is not None else map(name_key, class_names)) if k == key]
    if not found and name.isdigit() and int(name) < len(class_names):
        found = [int(name)]
    return found


def _unknown_class(text: str, class_names: Sequence[str]) -> IntriguingError:
    """The registry error for short lists; for long ones (ImageNet's 1000) the close matches only."""
    if len(class_names) <= 20:
        return unknown_name_error("class name", text, class_names)
    close = difflib.get_close_matches(text, list(class_names), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    return IntriguingError(f"unknown class {text!r}: {hint}give one of the model's {len(class_names)} class "
                           f"names or an index from 0 to {len(class_names) - 1}")


def name_key(name: str) -> str:
    """How class names compare when not exactly equal: ``Great_White-Shark`` names ``great white shark``."""
    return name.lower().replace("_", " ").replace("-", " ").strip()


def imagenet_class_names() -> list[str]:
    """ImageNet's 1000 class names (ILSVRC 2012 order), as used for 1000-class models."""
    text = resources.files("intriguing").joinpath("resources/imagenet_classes.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line (blank lines ignored), line ``i`` naming logit ``i``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise IntriguingError(
            f"{path}: cannot read the class names ({e}); expected a text file with one name per line"
        ) from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise IntriguingError(f"{path}: no class names in it; expected one name per line")
    return names


def _is_factory_spec(spec: str) -> bool:
    module, sep, factory = spec.rpartition(":")
    return bool(sep and module and factory and (module.endswith(".py") or "/" in module or "." in module
                                                 or module.isidentifier()))


def _import_module(module: str) -> Any:
    """The module named by a file path (run as a fresh module) or by a dotted import path."""
    try:
        if module.endswith(".py") or os.sep in module or "/" in module:
            path = Path(module)
            if not path.is_file():
                raise IntriguingError(f"model {module!r}: no such file")
            name = f"intriguing_user_model_{abs(hash(str(path.resolve())))}"
            spec = importlib.util.spec_from_file_location(name, path)
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[name] = loaded  # dataclasses and pickling look modules up here
            spec.loader.exec_module(loaded)
            return loaded
        return importlib.import_module(module)
    except IntriguingError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module failed: say which and why, in one line
        raise IntriguingError(f"model module {module!r} failed to import: {type(e).__name__}: {e}") from None


def _from_factory(spec: str, seed: int) -> tuple[nn.Module, tuple[int, ...] | None]:
    """Call ``factory()`` from the spec's module, torch's generator seeded by ``seed`` (its initial weights
    are the same from run to run); its ``INPUT_SHAPE`` (if any) gives the input shape."""
    module_name, _, factory_name = spec.rpartition(":")
    module = _import_module(module_name)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        known = [k for k, v in vars(module).items()  # the module's own callables, not what it imports
                 if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == module.__name__]
        raise unknown_name_error("factory", factory_name, known, plural="factories", where=f" in {module_name}")
    try:
        with seeding.seeded(seed):
            network = factory()
    except Exception as e:  # noqa: BLE001
        raise IntriguingError(f"model {spec!r}: {factory_name}() failed: {type(e).__name__}: {e}") from None
    if not isinstance(network, nn.Module):
        raise IntriguingError(
            f"model {spec!r}: {factory_name}() returned {type(network).__name__}, expected a torch.nn.Module"
        )
    shape = getattr(network, "input_shape", None) or getattr(module, "INPUT_SHAPE", None)
    return network, tuple(shape) if shape is not None else None


def _network(spec: str, weights, *, untrained: bool, seed: int, on: str,
             data_dir) -> tuple[nn.Module, tuple | None, str]:
    """The bare network named by ``spec``, its known input shape and a description."""
    if spec in BUILTINS:
        with seeding.seeded(seed):
            network = BUILTINS[spec].build()
        what = "your weights" if weights else BUILTINS[spec].weights or f"seeded random weights (seed {seed})"
        return network, BUILTINS[spec].input_shape, f"{spec} ({BUILTINS[spec].description}) with {what}"
    if spec in zoo.names():
        if weights or untrained:
            what = "your weights" if weights else f"untrained (seed {seed})"
            return zoo.build(spec, seed=seed), MNIST_SHAPE, f"zoo architecture {spec}, {what}"
        trained = zoo.trained(spec, on=on, seed=seed, data_dir=data_dir).model
        return trained, MNIST_SHAPE, f"zoo model {spec} (trained on {on}, seed {seed})"
    if _is_factory_spec(spec):
        network, shape = _from_factory(spec, seed)
        return network, shape, f"{spec}" + (" with your weights" if weights else f" (its initial weights, seed {seed})")
    known = [*BUILTINS, *zoo.names()]
    error = unknown_name_error("model", spec, known)
    raise IntriguingError(f"{error}; or give your own as path/to/file.py:factory or package.module:factory")


def _input_shape(network: nn.Module, known: tuple | None, size, crop, spec: str) -> tuple[int, int, int]:
    """The network's (C, H, W): ``size`` (else ``crop``) overrides the known size; C from the known
    shape or the first convolution."""
    full = known is not None and len(known) == 3
    hw = size_pair(size, "size") or size_pair(crop, "crop") or (tuple(known[-2:]) if full else None)
    if hw is None:
        raise IntriguingError(
            f"model {spec!r}: cannot tell its input size; pass size= (--size H or HxW), "
            "or define INPUT_SHAPE = (C, H, W) in the factory's module"
        )
    channels = known[0] if full else _first_layer_channels(network, hw, spec)
    return (int(channels), int(hw[0]), int(hw[1]))


def _first_layer_channels(network: nn.Module, hw: tuple[int, int], spec: str) -> int:
    """The input channels of the first convolution, or of a flat network's first ``Linear`` (its inputs
    divided by ``H * W``): the only number of channels with which images of size ``hw`` fit."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
        if isinstance(module, nn.Linear):
            channels, rest = divmod(module.in_features, hw[0] * hw[1])
            if rest or not channels:
                raise IntriguingError(
                    f"model {spec!r}: its first layer takes {module.in_features} values, not a whole number of "
                    f"{hw[0]}x{hw[1]} images; pass the size it was trained at (--size H or HxW)")
            return channels
    raise IntriguingError(f"model {spec!r}: cannot tell its input channels; define INPUT_SHAPE = (C, H, W) in the "
                          "factory's module")


def _class_names(classes, num_classes: int, spec: str) -> list[str]:
    if classes is None:
        if num_classes == 1000:
            return imagenet_class_names()
        return [str(i) for i in range(num_classes)]
    names = read_class_names(classes) if isinstance(classes, (str, os.PathLike)) else [str(c) for c in classes]
    if len(names) != num_classes:
        raise IntriguingError(
            f"classes: {len(names)} names given but model {spec!r} has {num_classes} outputs; give one name per logit"
        )
    return names


def _check_float32(network: nn.Module, spec: str) -> None:
    """Images are float32 in [0, 1] and so are the attacks' steps; a float64 or float16 network would
    fail on them deep inside torch, with a message about matrix dtypes."""
    other = sorted({str(p.dtype).removeprefix("torch.") for p in network.parameters()
                    if p.is_floating_point() and p.dtype != torch.float32})
    if other:
        raise IntriguingError(f"model {spec!r}: has {', '.join(other)} parameters, but images and attacks are float32; "
                              "return network.float() from the factory")


def _count_classes(model: nn.Module, input_shape: tuple[int, int, int], spec: str, device: torch.device) -> int:
    """Run one blank image through the model: it proves the input shape works and counts the logits."""
    try:
        with torch.no_grad():
            logits = model(torch.zeros(1, *input_shape, device=device))
    except Exception as e:  # noqa: BLE001
        raise IntriguingError(
            f"model {spec!r} fails on an input of shape (1, {', '.join(map(str, input_shape))}): "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; check --size and the model's channels"
        ) from None
    if not isinstance(logits, torch.Tensor):
        raise IntriguingError(f"model {spec!r}: returns a {type(logits).__name__}, expected logits shaped (N, classes); "
                              "make forward return the logits tensor (e.g. wrap it to return outputs.logits)")
    if logits.dim() != 2 or logits.shape[0] != 1:
        raise IntriguingError(f"model {spec!r}: expected logits shaped (N, classes), got {tuple(logits.shape)}")
    return logits.shape[1]


def resolve_model(spec: str, *, weights: str | os.PathLike | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None, size: int | Sequence[int] | None = None,
                  resize: int | None = None, crop: int | Sequence[int] | None = None,
                  classes: str | os.PathLike | Sequence[str] | None = None, device: str | torch.device = "cpu",
                  untrained: bool = False, seed: int = 0, on: str = "train",
                  data_dir: str | os.PathLike | None = None) -> LoadedModel:
    """The model named by ``spec`` behind its preprocessing, in eval mode on ``device``.

    ``size`` is the network's input size (a number or ``(H, W)``); ``resize`` (shorter side) and
    ``crop`` (centre) are the usual ImageNet steps; ``mean``/``std`` are per channel, for pixels
    in [0, 1]. ``classes`` is a file with one name per line or a list (default: ImageNet's names for
    1000 outputs, else the indices). A zoo name gives the model trained on split ``on`` (of the IDX
    data in ``data_dir``) with ``seed``, or with ``untrained`` its initial weights for ``seed``;
    ``seed`` also seeds the built-ins' random weights.
    """
    target = resolve_device(device)
    builtin = BUILTINS.get(str(spec))
    if builtin is not None:  # a pretrained built-in's own normalisation, unless the caller gives one
        mean = builtin.mean if mean is None else mean
        std = builtin.std if std is None else std
    network, known, description = _network(str(spec), weights, untrained=untrained, seed=seed, on=on,
                                           data_dir=data_dir)
    if weights is not None:
        load_weights(network, read_state_dict(weights))
        description += f" from {weights}"
    _check_float32(network, spec)
    input_shape = _input_shape(network, known, size, crop, spec)
    mean_v, std_v = channel_vector(mean, "mean"), channel_vector(std, "std")
    for name, vector in (("mean", mean_v), ("std", std_v)):
        if vector is not None and len(vector) not in (1, input_shape[0]):
            expected = "1 value (the model has 1 channel)" if input_shape[0] == 1 else \
                f"1 or {input_shape[0]} values (one per channel)"
            raise IntriguingError(f"{name}: expected {expected}, got {len(vector)}")
    resize, crop = positive_int(resize, "resize"), size_pair(crop, "crop")
    if resize is not None and crop is not None and max(crop) > resize:
        raise IntriguingError(f"crop {crop} is larger than resize {resize} (the images' shorter side after "
                              "resizing); give a crop of at most the resize")
    model = Preprocessed(network, input_shape[1:], mean, std, resize, crop).to(target).eval()
    num_classes = _count_classes(model, input_shape, spec, target)
    names = _class_names(classes, num_classes, spec)
    description += f"; input {'x'.join(map(str, input_shape))}, {num_classes} classes, on {target}"
    return LoadedModel(model, input_shape, names, description, target)

"""What the commands that take ``--model`` share: the model and the images it is run on.

Each command resolves its model with :func:`intriguing.models.resolve_model` (zoo names, built-in
architectures, ``file.py:factory``) and its images with :func:`load_data`: ``--data`` (an image
folder or a ``.npz``) at the model's input size, or else an MNIST split from the IDX files.
"""

from __future__ import annotations

import torch

from intriguing import data
from intriguing.errors import IntriguingError
from intriguing.images import ImageSet, load_images
from intriguing.models import LoadedModel
from intriguing.transfer import predictions

DIGITS = [str(i) for i in range(10)]


def load_data(loaded: LoadedModel, path: str | None, *, split: str = "test", data_dir: str | None = None,
              limit: int | None = None, fit: str = "crop") -> ImageSet:
    """``--data PATH`` decoded at the model's input shape (``fit``: see :func:`~intriguing.images.load_images`)
    and checked against its classes, or the MNIST ``split`` (IDX files in ``data_dir``, default the bundled
    copy) when no path is given."""
    if path is not None:
        channels, height, width = loaded.input_shape
        return load_images(path, size=(height, width), channels=channels, class_names=loaded.class_names,
                           limit=limit, fit=fit).to(loaded.device)
    _check_fits_mnist(loaded)
    images, labels = data.load_mnist(split, data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    names = loaded.class_names if loaded.num_classes == 10 else DIGITS
    return ImageSet(images, labels, names, [f"{split}[{i}]" for i in range(len(labels))],
                    f"MNIST {split}").to(loaded.device)


def _check_fits_mnist(loaded: LoadedModel) -> None:
    """MNIST is grey and has 10 classes: a colour model would fail inside torch, and one with fewer
    classes would be scored only on the digits it happens to have outputs for."""
    channels = loaded.input_shape[0]
    if channels != 1:
        problem = f"takes {channels}-channel images, but without --data the images are MNIST's (1 channel, 28x28)"
    elif loaded.num_classes < len(DIGITS):
        problem = f"has {loaded.num_classes} classes, but without --data the images are MNIST's 10 digits"
    else:
        return
    raise IntriguingError(f"model {loaded.description.split(';')[0]} {problem}; pass --data with images of its classes")


def correctly_classified(model: torch.nn.Module, dataset: ImageSet, n: int) -> torch.Tensor:
    """Indices of the first ``n`` examples that ``model`` classifies correctly (the paper attacks
    correctly classified examples only, Section 4.1)."""
    right = predictions(model, dataset.images) == dataset.labels
    return right.nonzero().flatten()[:n]

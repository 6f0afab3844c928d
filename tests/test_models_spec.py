"""Model specifications: zoo names, built-ins, user factories; weights; preprocessing; class names."""

from __future__ import annotations

import pickle
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from intriguing.errors import IntriguingError
from intriguing.models import (
    BUILTINS, LoadedModel, Preprocessed, catalogue, class_index, imagenet_class_names, resolve_model,
)

FACTORY = """
from collections import OrderedDict
from torch import nn

INPUT_SHAPE = (3, 8, 8)

def small():
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(), out=nn.Linear(4, 5),
    ))

def not_a_module():
    return 42

def broken():
    raise RuntimeError("boom")
"""


@pytest.fixture
def factory_file(tmp_path):
    path = tmp_path / "my_models.py"
    path.write_text(FACTORY)
    return path


def _small_state(seed: int = 1) -> OrderedDict:
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(3, 4, 3, padding=1), relu=nn.ReLU(), pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(), out=nn.Linear(4, 5),
    )).state_dict()


# --- naming a model ---------------------------------------------------------------------------


def test_file_factory_with_module_input_shape(factory_file):
    loaded = resolve_model(f"{factory_file}:small")
    assert isinstance(loaded, LoadedModel) and isinstance(loaded.model, Preprocessed)
    assert loaded.input_shape == (3, 8, 8) and loaded.num_classes == 5
    assert loaded.class_names == ["0", "1", "2", "3", "4"]
    assert not loaded.model.training
    assert "conv" in dict(loaded.network.named_modules())


def test_a_factory_without_weights_is_seeded_so_two_runs_agree(factory_file):
    """A bug: `lipschitz file.py:factory` without --weights gave other bounds on every run (unseeded init)."""
    first, again = resolve_model(f"{factory_file}:small"), resolve_model(f"{factory_file}:small")
    other = resolve_model(f"{factory_file}:small", seed=1)
    weights = [m.network.conv.weight for m in (first, again, other)]
    assert torch.equal(weights[0], weights[1]) and not torch.equal(weights[0], weights[2])


def test_package_module_factory(factory_file, monkeypatch):
    monkeypatch.syspath_prepend(str(factory_file.parent))
    loaded = resolve_model("my_models:small")
    assert loaded.num_classes == 5
    sys.modules.pop("my_models", None)


def test_builtin_alexnet_is_seeded_and_has_imagenet_names():
    a, b = resolve_model("alexnet", seed=3), resolve_model("alexnet", seed=3)
    assert a.input_shape == (3, 227, 227) and a.num_classes == 1000
    assert a.class_names[9] == "ostrich" and a.class_index("ostrich") == 9
    assert torch.equal(a.network.conv1.weight, b.network.conv1.weight)
    assert set(BUILTINS) <= {name for name, _, _ in catalogue()}


def test_zoo_architecture_untrained_and_with_weights(tmp_path):
    untrained = resolve_model("FC10(1e-4)", untrained=True, seed=0)
    assert untrained.input_shape == (1, 28, 28) and untrained.num_classes == 10
    path = tmp_path / "fc.safetensors"
    save_file({k: torch.full_like(v, 0.5) for k, v in untrained.network.state_dict().items()}, path)
    loaded = resolve_model("FC10(1e-4)", weights=path)
    assert all(bool((p == 0.5).all()) for p in loaded.network.parameters())
    assert "zoo" in {kind for _, kind, _ in catalogue()}


def test_unknown_name_suggests_close_matches_and_the_factory_form():
    with pytest.raises(IntriguingError, match=r"unknown model 'alexnt'.*did you mean 'alexnet'.*file.py:factory"):
        resolve_model("alexnt")


@pytest.mark.parametrize("factory, message", [
    ("missing", r"unknown factory 'missing' in .*my_models.py: .*known factories in .*my_models.py: broken, not_a_module, small$"),
    ("not_a_module", "returned int, expected a torch.nn.Module"),
    ("broken", r"broken\(\) failed: RuntimeError: boom"),
])
def test_bad_factories_are_one_clear_error(factory_file, factory, message):
    with pytest.raises(IntriguingError, match=message):
        resolve_model(f"{factory_file}:{factory}")


def test_missing_file_and_failing_import(tmp_path):
    with pytest.raises(IntriguingError, match="no such file"):
        resolve_model(f"{tmp_path / 'nope.py'}:f")
    bad = tmp_path / "bad.py"
    bad.write_text("import not_a_real_module_xyz\n")
    with pytest.raises(IntriguingError, match="failed to import: ModuleNotFoundError"):
        resolve_model(f"{bad}:f")


def test_unknown_input_size_asks_for_size(tmp_path):
    path = tmp_path / "shapeless.py"
    path.write_text("from torch import nn\n"
                    "def net():\n    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())\n")
    with pytest.raises(IntriguingError, match="cannot tell its input size; pass size="):
        resolve_model(f"{path}:net")
    assert resolve_model(f"{path}:net", size=6).input_shape == (3, 6, 6)
    assert resolve_model(f"{path}:net", size=(6, 9)).input_shape == (3, 6, 9)


def test_a_flat_network_takes_its_channels_from_its_first_linear_layer(tmp_path):
    """A bug: an MLP factory with --size 28 was told to pass a size (it could not count channels)."""
    path = tmp_path / "mlp.py"
    path.write_text("from torch import nn\n"
                    "def net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 5, 3))\n")
    assert resolve_model(f"{path}:net", size=(4, 5)).input_shape == (2, 4, 5)
    with pytest.raises(IntriguingError, match="cannot tell its input size; pass size="):
        resolve_model(f"{path}:net")
    with pytest.raises(IntriguingError, match=r"its first layer takes 40 values, not a whole number of 3x3 images"):
        resolve_model(f"{path}:net", size=3)


def test_wrong_size_for_the_network_is_one_clear_error():
    with pytest.raises(IntriguingError, match=r"fails on an input of shape \(1, 1, 30, 30\)"):
        resolve_model("FC10(1e-4)", untrained=True, size=30)


# --- weights ------------------------------------------------------------------------------------


def test_state_dict_pt_loads_through_weights_only(factory_file, tmp_path):
    state = _small_state()
    torch.save(state, tmp_path / "w.pt")
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "nested.pth")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "parallel.pth")
    for name in ("w.pt", "nested.pth", "parallel.pth"):
        loaded = resolve_model(f"{factory_file}:small", weights=tmp_path / name)
        assert torch.equal(loaded.network.out.weight, state["out.weight"])


class Payload:
    """A pickled object: loading it would need a full unpickle."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_weights_that_are_no_weights_file_are_not_called_a_damaged_checkpoint(factory_file):
    """A bug: --weights my_models.py said 'damaged checkpoint ...; delete it': advice to delete the user's code."""
    with pytest.raises(IntriguingError, match=r"my_models.py: not a weights file; give a .safetensors file or a "
                                              r"\.pt/\.pth state dict") as info:
        resolve_model(f"{factory_file}:small", weights=factory_file)
    assert "delete" not in str(info.value)


def test_pickled_objects_are_refused_without_running_them(factory_file, tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": Payload()}, f)
    with pytest.raises(IntriguingError, match="full unpickle.*torch.save\\(model.state_dict\\(\\)"):
        resolve_model(f"{factory_file}:small", weights=path)
    assert "this must never run" not in capsys.readouterr().out
    torch.save(nn.Linear(2, 2), tmp_path / "whole_model.pt")
    with pytest.raises(IntriguingError, match="full unpickle"):
        resolve_model(f"{factory_file}:small", weights=tmp_path / "whole_model.pt")


def test_weights_that_do_not_fit_list_the_shapes(factory_file, tmp_path):
    state = _small_state()
    state["out.weight"] = torch.zeros(7, 4)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(IntriguingError, match=r"out.weight: checkpoint \(7, 4\) vs model \(5, 4\)"):
        resolve_model(f"{factory_file}:small", weights=tmp_path / "w.pt")
    with pytest.raises(IntriguingError, match="no such weights file"):
        resolve_model(f"{factory_file}:small", weights=tmp_path / "absent.pt")


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocessing_normalises_inside_the_model(factory_file):
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
    loaded = resolve_model(f"{factory_file}:small", mean=mean, std=std)
    x = torch.rand(2, 3, 8, 8)
    normalised = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    assert torch.allclose(loaded.model.preprocess(x), normalised)
    assert torch.allclose(loaded.model(x), loaded.network(normalised))


def test_preprocessing_resizes_and_crops(factory_file):
    loaded = resolve_model(f"{factory_file}:small", resize=10, crop=8)
    assert loaded.input_shape == (3, 8, 8)
    seen = []
    loaded.network.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    x = torch.rand(1, 3, 20, 30, requires_grad=True)
    loaded.model(x).sum().backward()
    assert seen[-1] == (1, 3, 8, 8) and x.grad is not None and x.grad.abs().sum() > 0
    loaded.model(torch.rand(1, 3, 5, 5))  # other sizes are resized to the network's
    assert seen[-1] == (1, 3, 8, 8)


@pytest.mark.parametrize("kwargs, message", [
    ({"std": [0.0, 1.0, 1.0]}, "std: expected positive"),
    ({"mean": [0.1, 0.2]}, "mean: expected 1 or 3 values"),
    ({"mean": [0.1, 0.2], "size": 8, "model": "FC10(1e-4)"}, r"mean: expected 1 value \(the model has 1 channel\), got 2"),
    ({"size": 0}, "size: expected a positive size"),
    ({"size": True}, "size: expected a positive size"),  # was a 1x1 input, silently
    ({"size": 8.5}, "size: expected a positive size"),  # was a TypeError traceback
    ({"resize": 0}, "resize: expected a positive"),  # was every image shrunk to 1x1, silently
    ({"resize": 9.5}, "resize: expected a positive"),  # was truncated to 9, silently
    ({"resize": 6, "crop": 8}, r"crop \(8, 8\) is larger than resize 6"),
    ({"mean": "0.5"}, r"mean: expected one finite number per channel, got '0.5'"),  # was a ValueError traceback
])
def test_bad_preprocessing_arguments(factory_file, kwargs, message):
    model = kwargs.pop("model", f"{factory_file}:small")
    with pytest.raises(IntriguingError, match=message) as info:
        resolve_model(model, untrained=True, **kwargs)
    assert "check --size" not in str(info.value)


def test_numpy_sizes_and_a_scalar_mean_are_accepted(factory_file):
    """Sizes read from arrays are numpy ints, and one mean for every channel is a plain number."""
    loaded = resolve_model(f"{factory_file}:small", size=np.int64(8), mean=0.5, std=np.float32(0.25))
    assert loaded.input_shape == (3, 8, 8)
    assert torch.allclose(loaded.model.preprocess(torch.ones(1, 3, 8, 8)), torch.full((1, 3, 8, 8), 2.0))


# --- class names --------------------------------------------------------------------------------


def test_class_names_from_a_file_and_their_count(factory_file, tmp_path):
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\nbird\nfish\nsea lion\n")
    loaded = resolve_model(f"{factory_file}:small", classes=names)
    assert loaded.class_names == ["cat", "dog", "bird", "fish", "sea lion"]
    assert loaded.class_index("sea_lion") == 4 and loaded.class_index("2") == 2 and loaded.class_index(1) == 1
    names.write_text("cat\ndog\n")
    with pytest.raises(IntriguingError, match="2 names given but model .* has 5 outputs"):
        resolve_model(f"{factory_file}:small", classes=names)


def test_class_index_errors():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[9] == "ostrich"
    with pytest.raises(IntriguingError, match=r"'crane' names 2 classes \(134, 517\)"):
        class_index(names, "crane")
    with pytest.raises(IntriguingError, match="did you mean 'ostrich'"):
        class_index(names, "ostrch")
    with pytest.raises(IntriguingError, match="classes 0 to 999"):
        class_index(names, 1000)


def test_zoo_name_without_weights_is_the_trained_model(monkeypatch):
    from types import SimpleNamespace

    from intriguing import zoo

    calls = []
    built = zoo.build("FC10(1e-4)", seed=0).eval()

    def trained(name, **kwargs):
        calls.append((name, kwargs))
        return SimpleNamespace(model=built)

    monkeypatch.setattr(zoo, "trained", trained)
    loaded = resolve_model("FC10(1e-4)", seed=2, on="P1")
    assert loaded.network is built and calls == [("FC10(1e-4)", {"on": "P1", "seed": 2, "data_dir": None})]
    assert "trained on P1, seed 2" in loaded.description


def test_registered_architecture_is_a_model_name(monkeypatch):
    from intriguing import models

    monkeypatch.setattr(models, "BUILTINS", dict(models.BUILTINS))
    models.register_architecture("tiny", lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 4)), (3, 2, 2), "tiny")
    loaded = resolve_model("tiny", seed=1)
    assert loaded.input_shape == (3, 2, 2) and loaded.num_classes == 4
    assert ("tiny", "architecture", "tiny") in catalogue()
    with pytest.raises(IntriguingError, match="zoo model's"):
        models.register_architecture("ConvNet", nn.Identity, (1, 28, 28), "clash")


OUTPUTS = """
import torch
from torch import nn

INPUT_SHAPE = (1, 4, 4)

class Wrapped(nn.Module):
    def __init__(self, wrap):
        super().__init__()
        self.fc, self.wrap = nn.Linear(16, 3), wrap

    def forward(self, x):
        return self.wrap(self.fc(x.flatten(1)))

def as_tuple():
    return Wrapped(lambda logits: (logits,))

def as_dict():
    return Wrapped(lambda logits: {"logits": logits})

def double():
    return Wrapped(lambda logits: logits).double()
"""


@pytest.mark.parametrize("factory, message", [
    ("as_tuple", r"returns a tuple.*make forward return the logits tensor"),
    ("as_dict", r"returns a dict.*make forward return the logits tensor"),
    ("double", r"float64 parameters.*float32.*\.float\(\)"),
])
def test_models_whose_outputs_or_dtype_do_not_fit_say_how_to_fix_them(tmp_path, factory, message):
    """A HuggingFace-style output or a float64 network: one line naming the fix, not 'check --size'."""
    path = tmp_path / "outputs.py"
    path.write_text(OUTPUTS)
    with pytest.raises(IntriguingError, match=message) as info:
        resolve_model(f"{path}:{factory}")
    assert "--size" not in str(info.value)

"""Device choice: names resolve, missing accelerators fail in one clear line, CUDA runs when present."""

from __future__ import annotations

import pytest
import torch

from intriguing.attacks import LBFGS, LBFGSConfig, Targeted
from intriguing.devices import available, describe, resolve_device
from intriguing.errors import IntriguingError
from intriguing.models import resolve_model

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")


def test_cpu_and_auto_resolve():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == available()[0]
    assert available()[-1] == "cpu"


def test_unknown_device_lists_the_choices():
    with pytest.raises(IntriguingError, match="expected one of auto, cpu, cuda, mps"):
        resolve_device("tpu")
    with pytest.raises(IntriguingError, match="expected one of"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_missing_cuda_is_one_clear_error():
    with pytest.raises(IntriguingError, match="no CUDA GPU is available.*--device cpu"):
        resolve_device("cuda")


def test_missing_mps_is_one_clear_error():
    if "mps" in available():
        pytest.skip("this machine has Apple's Metal backend")
    with pytest.raises(IntriguingError, match="'mps'.*not available"):
        resolve_device("mps")


@needs_cuda
def test_cuda_index_out_of_range():
    with pytest.raises(IntriguingError, match="CUDA device"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    assert describe(resolve_device("cuda")).startswith("cuda:")


def _linear_factory_module(tmp_path):
    path = tmp_path / "tiny.py"
    path.write_text(
        "from torch import nn\n"
        "INPUT_SHAPE = (1, 4, 4)\n"
        "def factory():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3))\n"
    )
    return f"{path}:factory"


def test_model_lands_on_the_requested_device(tmp_path):
    loaded = resolve_model(_linear_factory_module(tmp_path), device="cpu")
    assert loaded.device == torch.device("cpu")


@needs_cuda
def test_attack_runs_on_cuda(tmp_path):
    """The attack test on the GPU: model, images, targets and the result all stay on CUDA."""
    loaded = resolve_model(_linear_factory_module(tmp_path), device="cuda", mean=[0.5], std=[0.25])
    assert loaded.device.type == "cuda"
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0)).cuda()
    with torch.no_grad():
        labels = loaded.model(x).argmax(1)
    target = (labels + 1) % 3
    result = LBFGS(LBFGSConfig.refined())(loaded.model, x, Targeted(target))
    assert result.adversarial.device.type == "cuda"
    assert bool(result.success.all())
    with torch.no_grad():
        assert torch.equal(loaded.model(result.adversarial).argmax(1), target)
    assert float(result.adversarial.min()) >= 0 and float(result.adversarial.max()) <= 1


@needs_cuda
def test_cuda_model_matches_cpu_model(tmp_path):
    spec = _linear_factory_module(tmp_path)
    cpu, gpu = resolve_model(spec, device="cpu"), resolve_model(spec, device="cuda")
    gpu.model.load_state_dict(cpu.model.state_dict())
    x = torch.rand(3, 1, 4, 4)
    with torch.no_grad():
        assert torch.allclose(cpu.model(x), gpu.model(x.cuda()).cpu(), atol=1e-5)


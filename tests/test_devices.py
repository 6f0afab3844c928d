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



# --- reproduce on a device: units ask Ray for GPUs, attacks run there ----------------------------------------


def test_each_unit_asks_ray_for_one_cpu_and_its_share_of_a_gpu():
    from intriguing.runner.backends.ray import unit_resources

    assert unit_resources() == {"num_cpus": 1}
    assert unit_resources(0.25) == {"num_cpus": 1, "num_gpus": 0.25}


def test_a_bad_gpu_share_is_refused_before_anything_starts():
    from intriguing.runner import backends

    for bad in (-1, 9, "one", True):
        with pytest.raises(IntriguingError, match="gpus per unit"):
            backends.create(1, gpus_per_unit=bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_reproduce_on_a_missing_gpu_is_one_clear_line(tmp_path):
    from click.testing import CliRunner

    from intriguing import cli

    result = CliRunner().invoke(cli.main, ["reproduce", "--preset", "smoke", "--device", "cuda", "--workers", "1",
                                           "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU is available" in lines[0] and "--device cpu" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_device_gets_its_own_stored_sections():
    from intriguing.paper.sections import table1
    from intriguing.runner import Context
    from intriguing.runner.storage import config_hash

    cpu = Context(preset="smoke", out=None, progress=False)
    assert config_hash(table1.SECTION, cpu) != config_hash(table1.SECTION, Context(preset="smoke", out=None,
                                                                                   progress=False, device="cuda"))


@needs_cuda
def test_an_attack_shard_on_cuda_gives_valid_examples_back_on_the_cpu(tmp_path):
    from intriguing.runner import work

    model = work.TrainModel.of("FC10(1e-4)", limit=300, overrides={"epochs": 1}, cache=str(tmp_path))
    spec = work.AttackShard(model, "test", 8, 0, 0, 8, LBFGSConfig.refined(), device="cuda")
    found = work.attack_shard(spec)
    assert found.adversarial.device.type == "cpu"
    assert float(found.adversarial.min()) >= 0 and float(found.adversarial.max()) <= 1
    with torch.no_grad():
        predicted = spec.model.load().model(found.adversarial).argmax(1)
    assert torch.equal(predicted[found.success], found.target[found.success])

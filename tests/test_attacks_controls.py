"""Table 2/4 controls (Gaussian noise, rescaled perturbations), random targets and the ``attack`` command."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing import cli, zoo
from intriguing.attacks import LBFGSConfig, gaussian_noise, rescale_perturbation, rms_distortion
from intriguing.errors import IntriguingError
from intriguing.seeding import random_targets


def test_gaussian_noise_is_seeded_clipped_and_of_the_asked_size():
    x = torch.full((64, 1, 28, 28), 0.5)
    noisy = gaussian_noise(x, 0.1, seed=3)
    assert torch.equal(noisy, gaussian_noise(x, 0.1, seed=3))
    assert not torch.equal(noisy, gaussian_noise(x, 0.1, seed=4))
    assert float(noisy.min()) >= 0 and float(noisy.max()) <= 1
    # Far from the bounds clipping is rare, so the RMS is the standard deviation.
    assert abs(float(rms_distortion(x, noisy).mean()) - 0.1) < 0.005
    # At the bounds clipping shrinks the noise: the realised RMS is below stddev (as documented).
    dark = torch.zeros(64, 1, 28, 28)
    assert float(rms_distortion(dark, gaussian_noise(dark, 0.3, seed=0)).max()) < 0.3


def test_rescale_keeps_the_direction_and_sets_the_rms():
    gen = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(8, 1, 4, 4, generator=gen)
    adv = x + 0.01 * torch.randn(x.shape, generator=gen)
    amplified = rescale_perturbation(x, adv, 0.05)
    assert torch.allclose(rms_distortion(x, amplified), torch.full((8,), 0.05), rtol=1e-4)
    cosine = nn.functional.cosine_similarity((amplified - x).flatten(1), (adv - x).flatten(1))
    assert torch.allclose(cosine, torch.ones(8), atol=1e-5)
    # A zero perturbation has no direction: unchanged. Clipping keeps the result in the box.
    assert torch.equal(rescale_perturbation(x, x, 0.1), x)
    big = rescale_perturbation(x, adv, 2.0)
    assert float(big.min()) >= 0 and float(big.max()) <= 1


@pytest.mark.parametrize("call", [
    lambda x: gaussian_noise(x, -0.1, seed=0),
    lambda x: gaussian_noise(x * 3, 0.1, seed=0),
    lambda x: rescale_perturbation(x, x[:2], 0.1),
    lambda x: rescale_perturbation(x, x, float("nan")),
])
def test_controls_reject_bad_input(call):
    with pytest.raises(IntriguingError):
        call(torch.rand(4, 3))


def test_random_targets_never_hit_the_label_and_are_seeded():
    labels = torch.arange(10).repeat(50)
    targets = random_targets(labels, 10, seed=1)
    assert bool((targets != labels).all()) and set(targets.tolist()) == set(range(10))
    assert torch.equal(targets, random_targets(labels, 10, seed=1))


@pytest.mark.parametrize("mode", ["random", "next", "untargeted"])
def test_attack_command_prints_and_records(monkeypatch, tmp_path, mode):
    model = zoo.build("FC10(1e-4)")  # untrained softmax regression: a quick stand-in for a trained one
    with torch.no_grad():
        model.out.weight.copy_(torch.randn(model.out.weight.shape, generator=torch.Generator().manual_seed(0)) * 0.05)
    monkeypatch.setattr(zoo, "trained", lambda *args, **kwargs: zoo.TrainedModel(model.eval(), record=None))
    out = tmp_path / "attack.json"
    result = CliRunner().invoke(cli.main, ["attack", "FC10(1e-4)", "--n", "4", "--target", mode, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "success 100.0%" in result.output and "median" in result.output
    record = json.loads(out.read_text())
    assert record["target"] == mode and record["summary"]["n"] == len(record["indices"]) <= 4
    assert record["config"]["method"] == "LBFGS" and len(record["per_example"]["distortion"]) == record["summary"]["n"]


@pytest.mark.parametrize("flags, config", [([], LBFGSConfig.refined()), (["--no-refine"], LBFGSConfig.paper())])
def test_attack_command_runs_the_refined_attack_or_the_papers(monkeypatch, tmp_path, flags, config):
    model = zoo.build("FC10(1e-4)")
    monkeypatch.setattr(zoo, "trained", lambda *args, **kwargs: zoo.TrainedModel(model.eval(), record=None))
    out = tmp_path / "attack.json"
    result = CliRunner().invoke(cli.main, ["attack", "FC10(1e-4)", "--n", "2", *flags, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["config"] == config.to_dict()


def test_attack_command_reports_bad_arguments_in_one_line():
    result = CliRunner().invoke(cli.main, ["attack", "FC10(1e-4)", "--n", "0"])
    assert result.exit_code == 2 and result.output.strip() == "error: --n: expected at least 1 example, got 0"

"""Unit analysis (Section 3): exact values on hand-built models, invariances, seeded directions, errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from intriguing import records, units, zoo
from intriguing.cli import main
from intriguing.commands.units import write_study
from intriguing.paper.sections import units as units_section
from intriguing.runner import Context
from intriguing.errors import IntriguingError

CLASSES = 10


def block_images(per_class: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class c lights rows 2c..2c+1 (plus faint noise everywhere), labels 0..9."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    images = 0.1 * torch.rand(len(labels), 1, 28, 28, generator=generator)
    for c in range(CLASSES):
        images[labels == c, 0, 2 * c : 2 * c + 2, :] = 1.0
    return images, labels


def detector_model(target: int = 3) -> nn.Sequential:
    """Unit 0 of layer ``h`` fires only for class ``target`` (its two rows), units 1-2 are random."""
    torch.manual_seed(1)
    model = nn.Sequential(OrderedDict(flatten=nn.Flatten(), fc=nn.Linear(28 * 28, 3), h=nn.ReLU(),
                                      out=nn.Linear(3, CLASSES)))
    with torch.no_grad():
        rows = torch.zeros(28, 28)
        rows[2 * target : 2 * target + 2, :] = 1.0
        model.fc.weight[0] = rows.flatten()
        model.fc.bias[0] = -40.0  # a lit class-target block gives 56; everything else at most ~8
    return model.eval()


def test_a_unit_firing_for_one_label_only_has_purity_one():
    images, labels = block_images()
    analysis = units.analyse(detector_model(target=3), "h", images, labels, k=5, directions=4)
    detector = analysis.families[units.UNITS]
    assert detector.purity[0] == 1.0
    assert detector.entropy[0] == 0.0
    assert detector.selectivity[0] == pytest.approx(1.0)  # zero mean response to every other class
    assert (labels[detector.top[0]] == 3).all()


def test_metrics_have_exact_values_on_hand_made_scores():
    labels = torch.tensor([1, 1, 2, 3, 0, 0, 0, 0])
    # Direction 0 ranks images 0-3 first: labels 1, 1, 2, 3. Direction 1 ranks the four 0s first.
    scores = torch.tensor([[8.0, 0.0], [7.0, 0.0], [6.0, 0.0], [5.0, 0.0],
                           [0.0, 4.0], [0.0, 4.0], [0.0, 4.0], [0.0, 4.0]])
    metrics = units.direction_metrics(scores, labels, k=4)
    assert metrics.purity.tolist() == [0.5, 1.0]
    assert metrics.entropy == pytest.approx([1.5, 0.0])  # shares 1/2, 1/4, 1/4 -> 1.5 bits
    # Direction 0: class means 0 (class 0), 7.5, 6, 5 -> (7.5 - 11/3) / (7.5 + 11/3).
    assert metrics.selectivity[0] == pytest.approx((7.5 - 11 / 3) / (7.5 + 11 / 3))
    assert metrics.selectivity[1] == pytest.approx(1.0)
    assert not metrics.constant.any()


def test_constant_directions_are_left_out():
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    scores = torch.stack([torch.arange(6.0), torch.zeros(6)], dim=1)  # a working and a dead unit
    metrics = units.direction_metrics(scores, labels, k=2)
    assert metrics.constant.tolist() == [False, True]
    assert len(metrics.values("purity")) == 1 and metrics.table().shape == (1, len(units.METRICS))


@pytest.mark.parametrize("law", units.LAWS)
def test_random_directions_are_seeded_unit_norm_and_reproducible(law):
    activations = torch.rand(300, 12, generator=torch.Generator().manual_seed(0)) ** 3
    first = units.random_directions(law, activations, 30, seed=5)
    assert first.shape == (12, 30) and first.dtype == torch.float32
    assert torch.allclose(first.norm(dim=0), torch.ones(30), atol=1e-6)
    assert torch.equal(first, units.random_directions(law, activations, 30, seed=5))
    assert not torch.allclose(first, units.random_directions(law, activations, 30, seed=6))
    signed = units.both_signs(first)
    assert torch.equal(signed[:, 30:], -first)


def test_rotation_columns_are_orthonormal_and_whitening_whitens():
    activations = torch.rand(500, 8, generator=torch.Generator().manual_seed(0)) @ torch.rand(8, 8)
    rotation = units.random_directions("rotation", activations, 8, seed=0).double()
    assert torch.allclose(rotation.T @ rotation, torch.eye(8, dtype=torch.float64), atol=1e-5)
    w = units.whitening_matrix(activations)
    centred = activations.double() - activations.double().mean(0)
    covariance = centred.T @ centred / (len(centred) - 1)
    assert torch.allclose(w @ covariance @ w, torch.eye(8, dtype=torch.float64), atol=1e-6)


def test_whitening_ignores_dead_units():
    activations = torch.cat([torch.rand(200, 4), torch.zeros(200, 2)], dim=1)
    directions = units.random_directions("whitened", activations, 10, seed=0)
    assert torch.isfinite(directions).all() and directions[4:].abs().max() < 1e-6


def test_statistics_do_not_depend_on_the_order_of_units():
    generator = torch.Generator().manual_seed(0)
    activations = torch.rand(400, 20, generator=generator) ** 4
    labels = torch.randint(0, CLASSES, (400,), generator=generator)
    perm = torch.randperm(20, generator=generator)
    plain = units.analyse_activations(activations, labels, k=6, directions=15, seed=2)
    permuted = units.analyse_activations(activations[:, perm], labels, k=6, directions=15, seed=2)
    for metric in units.METRICS:
        assert np.array_equal(getattr(permuted.families[units.UNITS], metric),
                              getattr(plain.families[units.UNITS], metric)[perm.numpy()])
    a = units.summarise_study([plain], model="m", resamples=300)
    b = units.summarise_study([permuted], model="m", resamples=300)
    assert a.families[0] == b.families[0]
    for metric in units.METRICS:  # random images do not depend on the activations: the same test exactly
        assert a.comparison(units.RANDOM_IMAGES, metric) == b.comparison(units.RANDOM_IMAGES, metric)


def test_compare_is_order_free_and_finds_a_real_difference():
    rng = np.random.default_rng(0)
    u, v = rng.normal(0.5, 1.0, 200), rng.normal(0.0, 1.0, 300)
    [shifted] = units.compare([u], [v], resamples=1000, seed=1)
    assert shifted.difference == pytest.approx(u.mean() - v.mean())
    assert shifted.ci_low < shifted.difference < shifted.ci_high and shifted.ci_low > 0
    assert shifted.p_value == pytest.approx(1 / 1001)
    assert units.compare([rng.permutation(u)], [rng.permutation(v)], resamples=1000, seed=1) == [shifted]
    [same] = units.compare([v[:150]], [v[150:]], resamples=1000, seed=1)
    assert same.ci_low < 0 < same.ci_high and same.p_value > 0.05


def test_a_bootstrap_mean_from_draw_counts_is_the_mean_of_the_drawn_rows():
    from intriguing.units.comparison import _resampled_means

    rng = np.random.default_rng(3)
    x, draws = rng.normal(size=(7, 3)), rng.integers(0, 7, (50, 9))  # repeated draws in most replicates
    np.testing.assert_allclose(_resampled_means(x, draws), x[draws].mean(1), rtol=1e-13, atol=1e-15)


def test_compare_pools_seeds_and_metrics():
    rng = np.random.default_rng(1)
    per_seed = [(rng.normal(1.0, 1, (50, 2)), rng.normal(0.0, 1, (80, 2))) for _ in range(3)]
    purity, entropy = units.compare([a for a, _ in per_seed], [b for _, b in per_seed], resamples=500)
    expected = [a[:, 0].mean() - b[:, 0].mean() for a, b in per_seed]
    assert purity.seed_differences == pytest.approx(expected)
    assert purity.difference == pytest.approx(np.mean(expected))
    assert entropy.difference == pytest.approx(np.mean([a[:, 1].mean() - b[:, 1].mean() for a, b in per_seed]))
    with pytest.raises(IntriguingError, match="one array per seed"):
        units.compare([per_seed[0][0]], [], resamples=10)


def test_verdict_follows_the_direction_of_coherence():
    better = units.Difference(difference=-0.3, ci_low=-0.4, ci_high=-0.2, p_value=0.001, seed_differences=[-0.3])
    assert units.verdict("entropy", better) == "units more coherent"  # lower entropy is more coherent
    assert units.verdict("purity", better) == "units less coherent"
    unsure = units.Difference(difference=0.1, ci_low=-0.1, ci_high=0.3, p_value=0.2, seed_differences=[0.1])
    assert units.verdict("purity", unsure) == "no significant difference"


def test_an_unknown_layer_lists_the_valid_ones():
    with pytest.raises(IntriguingError, match=r"unknown layer 'h3'.*'h1'.*known layers: .*fc1.*h2"):
        units.find_layer(zoo.build("FC100-100-10"), "h3")
    with pytest.raises(IntriguingError, match="known layers"):
        units.layer_activations(detector_model(), block_images()[0], "hidden")


def test_cli_reports_an_unknown_layer_in_one_line():
    result = CliRunner().invoke(main, ["units", "ConvNet", "--layer", "feature"])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "did you mean 'features'" in result.output


def test_cli_without_a_layer_lists_the_models_layers_in_one_line(tmp_path):
    """Issue 13 asks for the layer names when --layer is missing; click used to say only 'Missing option'."""
    result = CliRunner().invoke(main, ["units", "ConvNet"])
    assert result.exit_code == 2 and result.output.strip().count("\n") == 0, result.output
    assert "which layer? give --layer NAME, one of the model's layers: conv1, " in result.output
    assert "features" in result.output


def test_layer_activations_flatten_convolutions_and_keep_the_mode():
    model = zoo.build("ConvNet").train()
    images = block_images(per_class=1)[0]
    assert units.layer_activations(model, images, "pool1").shape == (10, 16 * 14 * 14)
    assert units.layer_activations(model, images, "features").shape == (10, 128)
    assert model.training


def test_a_layer_run_twice_per_forward_pass_is_refused():
    shared = nn.Linear(784, 784)
    model = nn.Sequential(OrderedDict(flatten=nn.Flatten(), twice=nn.Sequential(shared, shared)))
    with pytest.raises(IntriguingError, match="exactly once"):
        units.layer_activations(model, block_images(per_class=1)[0], "twice.0")


@pytest.mark.parametrize(("k", "labels", "message"), [
    (60, None, "1 <= k < 60"),
    (5, torch.zeros(60, dtype=torch.int64), "at least 2 classes"),
    (5, torch.zeros(59, dtype=torch.int64), "expected shape"),
])
def test_bad_analysis_inputs_raise_clear_errors(k, labels, message):
    images, good = block_images()
    with pytest.raises(IntriguingError, match=message):
        units.analyse(detector_model(), "h", images, good if labels is None else labels, k=k)


def test_same_seed_same_numbers():
    images, labels = block_images()
    model = zoo.build("FC100-100-10")
    first = units.analyse(model, "h1", images, labels, k=4, directions=10, seed=3)
    again = units.analyse(model, "h1", images, labels, k=4, directions=10, seed=3)
    assert json.dumps(records.to_jsonable(first)) == json.dumps(records.to_jsonable(again))


def test_study_model_writes_json_and_figures(tmp_path):
    images, labels = block_images()
    study = write_study(detector_model(), "h", images, labels, tmp_path, model_name="detector", k=5,
                        directions=6, resamples=100)
    saved = records.read_json(tmp_path / "units.json")
    assert saved["study"]["comparisons"][0]["verdict"] == study.comparisons[0].verdict
    assert saved["config"]["layer"] == "h" and len(saved["analysis"]["families"]["units"]["purity"]) == 3
    for name in ("grid.png", "purity.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_units_section_runs_renders_and_states_its_claims(tmp_path, isolated_cache):
    settings = units_section.StudySettings(layers=(("FC100-100-10", "h1"),), seeds=(0, 1), directions=8,
                                           resamples=100, images=300, train_limit=300, train_overrides={"epochs": 1})
    ctx = Context(preset="smoke", out=tmp_path, cache=str(isolated_cache), progress=False)
    result = records.to_jsonable(units_section.SECTION.run(ctx, settings, {}))
    result = json.loads(json.dumps(result))  # what a resumed run reads back
    variants = {(s["model"], s["variant"]) for s in result["studies"]}
    assert variants == {("FC100-100-10", "trained"), ("FC100-100-10", "untrained"), ("raw pixels", "pixels")}
    assert all(s["seeds"] == [0, 1] for s in result["studies"])
    text = units_section.SECTION.render(result, ctx)
    assert "| FC100-100-10 | h1 | gaussian |" in text and "figures/units-FC100-100-10-h1.png" in text
    assert (tmp_path / "figures" / "units-purity.png").is_file()
    claims = units_section.SECTION.claims(result)
    # Tested as equivalence (issue 12): a tiny study may leave a claim undecided, never "holds" on a mere
    # absence of significance; every verdict quotes the TOST interval.
    assert len(claims) == 2 and all("90%" in c.evidence for c in claims)
    assert all(c.holds is not True or "neither" not in c.evidence for c in claims)
    assert all(not math.isnan(c["difference"]) for s in result["studies"] for c in s["comparisons"])


def test_the_library_loads_neither_the_report_nor_matplotlib():
    code = ("import sys, intriguing.units; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith("
            "('intriguing.report', 'intriguing.paper', 'intriguing.runner', 'intriguing.reproduce'))))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"


def test_a_study_survives_its_json_form():
    images, labels = block_images()
    _, study = units.study_model(detector_model(), "h", images, labels, k=5, directions=6, resamples=50)
    assert units.UnitStudy.from_json(json.loads(json.dumps(records.to_jsonable(study)))) == study

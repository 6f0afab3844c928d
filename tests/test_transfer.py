"""Tables 1-4 machinery: intervals against scipy, exact tables on hand-made models, the attacks'
plumbing on small linear models, and the paper's own numbers passing our claim checks."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from scipy import stats
from torch import nn

from intriguing import seeding, training, transfer
from intriguing import stats as intervals
from intriguing.attacks import LBFGS, LBFGSConfig, gaussian_noise
from intriguing.errors import IntriguingError
from intriguing.paper.sections import _transfer, table1, table2, table3, table4
from intriguing.paper.tables import paper
from intriguing.report.figures.transfer import adversarial_figure



# --- intervals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("successes, n", [(0, 10), (5, 10), (10, 10), (3, 1000), (997, 1000), (1, 1)])
def test_wilson_interval_matches_scipy(successes, n):
    ours = intervals.wilson_interval(successes, n)
    reference = stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    assert ours.value == successes / n and ours.n == n and ours.method == "wilson"
    assert ours.low == pytest.approx(reference.low, abs=1e-12)
    assert ours.high == pytest.approx(reference.high, abs=1e-12)


def test_wilson_interval_of_nothing_is_not_measured_and_impossible_counts_fail():
    assert math.isnan(intervals.wilson_interval(0, 0).value)
    with pytest.raises(IntriguingError, match="successes"):
        intervals.wilson_interval(11, 10)


def test_mean_interval_matches_scipy_and_leaves_out_failed_attacks():
    values = np.array([0.05, 0.07, 0.06, np.nan, 0.09, 0.04])
    ours = intervals.mean_interval(torch.tensor(values))
    finite = values[np.isfinite(values)]
    low, high = stats.t.interval(0.95, len(finite) - 1, loc=finite.mean(), scale=stats.sem(finite))
    assert (ours.n, ours.method) == (5, "t")
    assert ours.value == pytest.approx(finite.mean())
    assert (ours.low, ours.high) == (pytest.approx(low), pytest.approx(high))
    assert math.isnan(intervals.mean_interval([math.nan]).value)
    assert math.isnan(intervals.mean_interval([0.1]).low)


# --- examples and targets -------------------------------------------------------------------------


def test_random_targets_are_wrong_labels_reproducible_and_cover_every_other_class():
    labels = torch.arange(10).repeat(100)
    targets = seeding.random_targets(labels, 10, seed=7)
    assert (targets != labels).all()
    assert torch.equal(targets, seeding.random_targets(labels, 10, seed=7))
    assert not torch.equal(targets, seeding.random_targets(labels, 10, seed=8))
    assert set(((targets - labels) % 10).tolist()) == set(range(1, 10))
    with pytest.raises(IntriguingError, match="labels"):
        seeding.random_targets(torch.tensor([3, 10]), 10, seed=0)


def test_example_indices_are_a_sorted_seeded_subset_or_everything():
    chosen = seeding.example_indices(1000, 50, seed=1)
    assert len(set(chosen.tolist())) == 50 and torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, seeding.example_indices(1000, 50, seed=1))
    assert torch.equal(seeding.example_indices(30, None, seed=1), torch.arange(30))
    assert torch.equal(seeding.example_indices(30, 100, seed=1), torch.arange(30))
    with pytest.raises(IntriguingError, match="examples"):
        seeding.example_indices(30, 0, seed=1)


# --- the transfer table, exactly ----------------------------------------------------------------------


class Brightness(nn.Module):
    """Class 1 when the mean pixel exceeds 0.5, else class 0 (of 2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10 * (x.flatten(1).mean(1) - 0.5)
        return torch.stack([torch.zeros_like(score), score], 1)


class Constant(nn.Module):
    """Always class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0]).expand(len(x), 2)


def test_transfer_table_counts_errors_and_distortions_exactly():
    x = torch.tensor([0.2, 0.3, 0.7, 0.9]).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    y = torch.tensor([0, 0, 1, 1])  # Brightness classifies the clean images perfectly
    rows = {"clean": x, "inverted": 1 - x}
    table = transfer.transfer_table({"brightness": Brightness(), "constant": Constant()}, rows, x, y)
    assert table.columns == ["brightness", "constant"] and table.n == 4
    assert table.rows["clean"]["brightness"].value == 0.0
    assert table.rows["inverted"]["brightness"].value == 1.0
    assert table.rows["clean"]["constant"].value == table.rows["inverted"]["constant"].value == 0.5
    assert table.distortion["clean"].value == 0.0
    assert table.distortion["inverted"].value == pytest.approx(np.mean([0.6, 0.4, 0.4, 0.8]))


def test_transfer_table_rejects_mismatched_rows_and_empty_models():
    x, y = torch.rand(4, 1, 2, 2), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(IntriguingError, match=r"perturbed\['small'\].*shape"):
        transfer.transfer_table({"c": Constant()}, {"small": x[:2]}, x, y)
    with pytest.raises(IntriguingError, match=r"perturbed\['bright'\]: values must lie in"):
        transfer.transfer_table({"c": Constant()}, {"bright": x + 1}, x, y)
    with pytest.raises(IntriguingError, match="models"):
        transfer.transfer_table({}, {"clean": x}, x, y)
    with pytest.raises(IntriguingError, match="y"):
        transfer.transfer_table({"c": Constant()}, {"clean": x}, x, y[:3])


# --- with a real attack on small linear models ------------------------------------------------------------


PAPERS_ATTACK = LBFGS(LBFGSConfig.paper())  # as in the tables: the paper's attack, without refinement


def linear_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    return model.eval()


@pytest.fixture(scope="module")
def small_problem():
    generator = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(12, 1, 4, 4, generator=generator)
    models = {"a": linear_model(1), "b": linear_model(2)}
    y = transfer.predictions(models["a"], x)  # labels model "a" gets right
    targets = seeding.random_targets(y, 3, seed=0)
    attacked = {name: transfer.attack_model(model, x, targets, attack=PAPERS_ATTACK, batch_size=5)
                for name, model in models.items()}
    return models, x, y, targets, attacked


def test_cross_model_table_fools_each_source_and_adds_the_controls(small_problem):
    models, x, y, _, _ = small_problem
    table = transfer.cross_model_table(models, x, y, attack=PAPERS_ATTACK, gaussian=(0.1,), amplify_to=0.2, seed=3)
    assert list(table.rows) == ["a", "b", "Gaussian noise, stddev=0.1", "a amplified to stddev=0.2",
                                "b amplified to stddev=0.2"]
    assert table.rows["a"]["a"].value == 1.0 and table.rows["b"]["b"].value == 1.0  # the diagonal
    noise = gaussian_noise(x, 0.1, seed=3)
    expected = (transfer.predictions(models["b"], noise) != y).float().mean().item()
    assert table.rows["Gaussian noise, stddev=0.1"]["b"].value == pytest.approx(expected)
    assert 0.15 < table.distortion["a amplified to stddev=0.2"].value <= 0.2  # clipping can only shrink it


def test_attack_model_joins_its_batches_reproducibly_and_round_trips_through_a_file(small_problem, tmp_path):
    models, x, _, targets, attacked = small_problem
    seen = []
    again = transfer.attack_model(models["b"], x, targets, attack=PAPERS_ATTACK, batch_size=5, on_batch=seen.append)
    assert seen == [5 / 12, 10 / 12, 1.0]
    assert torch.equal(again.adversarial, attacked["b"].adversarial)  # same inputs, same numbers
    middle = PAPERS_ATTACK(models["b"], x[5:10], target=targets[5:10])  # the second of the three batches
    assert torch.equal(attacked["b"].adversarial[5:10], middle.adversarial)
    assert attacked["b"].success_rate().value == 1.0 and attacked["b"].mean_distortion().n == 12
    attacked["b"].save(tmp_path / "b.safetensors")
    loaded = transfer.AdversarialSet.load(tmp_path / "b.safetensors")
    for name in ("adversarial", "target", "success", "distortion"):
        assert torch.equal(getattr(loaded, name), getattr(attacked["b"], name))
    assert loaded.config == attacked["b"].config and loaded.config["refine"] is False


def test_adversarial_figure_draws_four_panels_per_example_and_model(small_problem, tmp_path):
    models, x, _, _, attacked = small_problem
    figure = adversarial_figure(models, x, {n: a.adversarial for n, a in attacked.items()}, examples=2)
    assert len(figure.axes) == 2 * 4 * 2
    figure.savefig(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the sections speak the paper's names, and the paper passes our claim checks ---------------------------


def test_experiments_and_row_names_are_the_papers():
    assert [c for c, _, _ in _transfer.CROSS_MODEL.models] == list(paper("table1")["rows"])
    assert [c for c, _, _ in _transfer.CROSS_MODEL.models] + ["av_distortion"] == paper("table2")["columns"]
    assert [c for c, _, _ in _transfer.CROSS_TRAINING_SET.models] == paper("table4")["columns"]
    assert [f"{c} (trained on {on})" for c, _, on in _transfer.CROSS_TRAINING_SET.models] == list(
        paper("table3")["rows"])
    columns = paper("table4")["columns"]
    generated = columns + [transfer.gaussian_row(s) for s in table4.NOISE] + [
        transfer.amplified_row(c, table4.AMPLIFIED) for c in columns]
    assert {table4.row_name(r) for r in generated} == set(paper("table4")["rows"])
    assert {transfer.gaussian_row(s) for s in table2.NOISE} <= set(paper("table2")["rows"])


PAPERS_N = 10_000  # the paper gives no intervals: read its numbers as measured on this many examples


def papers_estimate(column: str, value: float) -> dict:
    """One of the paper's numbers as our estimate record: a Wilson interval for a rate, ±1% for a distortion."""
    if "distortion" in column:
        return {"value": value, "low": 0.99 * value, "high": 1.01 * value, "n": PAPERS_N, "method": "t"}
    return dataclasses.asdict(intervals.wilson_interval(round(value * PAPERS_N), PAPERS_N))


def papers_result(key: str) -> dict:
    """The paper's table in our result format. Claims are decided by intervals only, so the paper's point
    values get the intervals they would have on ``PAPERS_N`` examples each."""
    cells = _transfer.paper_cells(key)
    rows = {row: {c: papers_estimate(c, v) for c, v in values.items()} for row, values in cells.items()}
    columns = paper(key)["columns"]
    success = dataclasses.asdict(intervals.wilson_interval(PAPERS_N, PAPERS_N))
    # Each row's realised RMS, which Table 4's claims quote: the stddev in the paper's row name.
    row_rms = {row: papers_estimate("distortion", float(row.rstrip(")").split("=")[-1])) for row in rows
               if key == "table4"}
    return {"columns": columns, "rows": rows, "attack_success": {r: success for r in rows}, "row_distortion": row_rms}


@pytest.mark.parametrize("key, check", [("table1", table1.claims), ("table2", table2.claims),
                                        ("table4", table4.claims)])
def test_the_papers_own_numbers_satisfy_every_claim_check(key, check):
    claims = check(papers_result(key))
    assert claims and all(claim.holds is True for claim in claims), [c.statement for c in claims if not c.holds]


def test_claims_fail_when_noise_beats_transferred_examples():
    result = papers_result("table2")
    for column in result["columns"]:
        result["rows"]["Gaussian noise, stddev=0.1"][column] = papers_estimate(column, 0.99)
    verdicts = [c.holds for c in table2.claims(result)]
    # diagonal, transfer beats noise, the autoencoder is the most resilient: only the noise claim falls
    assert verdicts == [True, False, True]


# --- the layers: the library alone, stored attacks that notice damage and code changes ----------------------


def test_importing_the_library_loads_no_report_runner_paper_or_matplotlib():
    code = ("import sys, intriguing.transfer; "
            "print([m for m in sys.modules if m.split('.')[0] == 'matplotlib' or m.startswith("
            "('intriguing.report', 'intriguing.runner', 'intriguing.paper', 'intriguing.reproduce'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_error_estimate_is_training_error_rate_with_its_wilson_interval(small_problem):
    models, x, y, _, _ = small_problem
    estimate = transfer.error_estimate(models["b"], x, y)
    assert estimate.value == pytest.approx(training.error_rate(models["b"], x, y))
    assert estimate == intervals.wilson_interval(int((transfer.predictions(models["b"], x) != y).sum()), len(y))


def test_noise_comparison_shows_changed_examples_with_noise_of_the_same_size(small_problem):
    models, x, _, _, attacked = small_problem
    panels = transfer.noise_comparison(models, x, {n: a.adversarial for n, a in attacked.items()}, examples=2, seed=4)
    changed = torch.stack([a.distortion > 0 for a in attacked.values()]).all(0).nonzero().flatten()[:2]
    assert list(panels) == ["a", "b"] and len(changed) == 2
    for name, c in panels.items():
        assert torch.equal(c.shown, changed) and c.clean.shape == c.noisy.shape == (2, 1, 4, 4)
        assert torch.equal(c.classes[1], attacked[name].target[changed])  # the attack reached its targets
        assert 0 <= float(c.difference.min()) and float(c.difference.max()) <= 1
        assert torch.allclose(c.rms[0], attacked[name].distortion[changed])


def counting_attack(adversarial: transfer.AdversarialSet):
    calls = []

    def attack() -> transfer.AdversarialSet:
        calls.append(1)
        return adversarial
    return attack, calls


def test_a_stored_attack_is_reused_and_a_damaged_one_is_reported_and_recomputed(small_problem, tmp_path):
    _, _, _, _, attacked = small_problem
    path = tmp_path / "adversarial.safetensors"
    attack, calls = counting_attack(attacked["a"])
    _transfer.stored_attack(path, 12, attack)
    reused = _transfer.stored_attack(path, 12, attack)
    assert len(calls) == 1 and torch.equal(reused.adversarial, attacked["a"].adversarial)
    path.write_bytes(path.read_bytes()[:-100])  # a disk that filled up
    with pytest.warns(UserWarning, match="recomputing the attack"):
        _transfer.stored_attack(path, 12, attack)
    assert len(calls) == 2 and torch.equal(transfer.AdversarialSet.load(path).adversarial, attacked["a"].adversarial)
    with pytest.warns(UserWarning, match="holds 12 examples, expected 13"):
        _transfer.stored_attack(path, 13, attack)
    assert len(calls) == 3


def test_an_adversarial_set_with_bad_metadata_or_missing_tensors_is_refused_clearly(small_problem, tmp_path):
    _, _, _, _, attacked = small_problem
    tensors = {name: getattr(attacked["a"], name) for name in transfer.TENSORS}
    save_file(tensors, tmp_path / "bad.safetensors", metadata={"config": "{not json"})
    with pytest.raises(IntriguingError, match="no readable attack config"):
        transfer.AdversarialSet.load(tmp_path / "bad.safetensors")
    save_file({"adversarial": tensors["adversarial"]}, tmp_path / "part.safetensors", metadata={"config": "{}"})
    with pytest.raises(IntriguingError, match="missing tensors"):
        transfer.AdversarialSet.load(tmp_path / "part.safetensors")
    (tmp_path / "noise.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(IntriguingError, match="not a readable safetensors file"):
        transfer.AdversarialSet.load(tmp_path / "noise.safetensors")


def test_a_stored_attack_is_keyed_by_the_attack_and_the_version_of_its_code(monkeypatch):
    s = _transfer.SETTINGS["smoke"]
    key = _transfer.attack_key(s, _transfer.CROSS_MODEL, "model-abc")
    assert key.startswith("model-abc-") and key == _transfer.attack_key(s, _transfer.CROSS_MODEL, "model-abc")
    stronger = dataclasses.replace(s, attack=LBFGSConfig.paper(max_solves=11, max_iter=50))
    assert _transfer.attack_key(stronger, _transfer.CROSS_MODEL, "model-abc") != key
    assert _transfer.attack_key(s, _transfer.CROSS_TRAINING_SET, "model-abc") != key
    assert _transfer.attack_key(s, _transfer.CROSS_MODEL, "model-abc", "cuda") != key
    assert "intriguing.attacks" in _transfer.ATTACK_CODE
    monkeypatch.setattr(_transfer, "code_version", lambda *modules: "a-changed-solver")
    assert _transfer.attack_key(s, _transfer.CROSS_MODEL, "model-abc") != key


def test_the_sections_keep_their_keys_titles_and_the_papers_attack():
    sections = [module.SECTION for module in (table1, table2, table3, table4)]
    assert [s.key for s in sections] == ["table1", "table2", "table3", "table4"]
    assert [s.title for s in sections] == [
        "Table 1: the models, their errors and minimum distortions",
        "Table 2: cross-model generalization of adversarial examples",
        "Table 3: models trained on disjoint halves P1 and P2",
        "Table 4: cross-training-set generalization",
    ]
    assert all(s.settings is _transfer.SETTINGS for s in sections)
    assert all(setting.attack.refine is False for setting in _transfer.SETTINGS.values())
    assert [s.claims is not None for s in sections] == [True, True, False, True]


def test_a_model_that_gets_every_drawn_example_wrong_counts_nothing_instead_of_failing():
    """With the attacked examples restricted to the correctly classified ones, a barely trained model may
    keep none; its adversarial and amplified rows are then empty, not an error."""
    from types import SimpleNamespace

    from intriguing.paper.sections import _tabulate

    x = torch.rand(4, 1, 28, 28)
    prepared = SimpleNamespace(correct={"a": torch.zeros(4, dtype=torch.bool)}, x=x, y=torch.zeros(4, dtype=torch.long),
                               adversarial={"a": SimpleNamespace(adversarial=x.clone())}, models={"a": None})
    table = _tabulate._model_rows(prepared, "a", 0.1)
    assert set(table.rows) == {"a", transfer.amplified_row("a", 0.1)} and table.rows["a"]["a"].n == 0

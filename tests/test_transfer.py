"""Tables 1-4 machinery: intervals against scipy, exact tables on hand-made models, the attacks'
plumbing on small linear models, and the paper's own numbers passing our claim checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from intriguing import reproduce, transfer
from intriguing.attacks import LBFGS, gaussian_noise
from intriguing.errors import IntriguingError



# --- intervals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("successes, n", [(0, 10), (5, 10), (10, 10), (3, 1000), (997, 1000), (1, 1)])
def test_wilson_interval_matches_scipy(successes, n):
    ours = transfer.wilson_interval(successes, n)
    reference = stats.binomtest(successes, n).proportion_ci(0.95, method="wilson")
    assert ours.value == successes / n and ours.n == n and ours.method == "wilson"
    assert ours.low == pytest.approx(reference.low, abs=1e-12)
    assert ours.high == pytest.approx(reference.high, abs=1e-12)


def test_wilson_interval_of_nothing_is_not_measured_and_impossible_counts_fail():
    assert math.isnan(transfer.wilson_interval(0, 0).value)
    with pytest.raises(IntriguingError, match="successes"):
        transfer.wilson_interval(11, 10)


def test_mean_interval_matches_scipy_and_leaves_out_failed_attacks():
    values = np.array([0.05, 0.07, 0.06, np.nan, 0.09, 0.04])
    ours = transfer.mean_interval(torch.tensor(values))
    finite = values[np.isfinite(values)]
    low, high = stats.t.interval(0.95, len(finite) - 1, loc=finite.mean(), scale=stats.sem(finite))
    assert (ours.n, ours.method) == (5, "t")
    assert ours.value == pytest.approx(finite.mean())
    assert (ours.low, ours.high) == (pytest.approx(low), pytest.approx(high))
    assert math.isnan(transfer.mean_interval([math.nan]).value)
    assert math.isnan(transfer.mean_interval([0.1]).low)


# --- examples and targets -------------------------------------------------------------------------


def test_random_targets_are_wrong_labels_reproducible_and_cover_every_other_class():
    labels = torch.arange(10).repeat(100)
    targets = transfer.random_targets(labels, seed=7)
    assert (targets != labels).all()
    assert torch.equal(targets, transfer.random_targets(labels, seed=7))
    assert not torch.equal(targets, transfer.random_targets(labels, seed=8))
    assert set(((targets - labels) % 10).tolist()) == set(range(1, 10))
    with pytest.raises(IntriguingError, match="labels"):
        transfer.random_targets(torch.tensor([3, 10]), seed=0)


def test_example_indices_are_a_sorted_seeded_subset_or_everything():
    chosen = transfer.example_indices(1000, 50, seed=1)
    assert len(set(chosen.tolist())) == 50 and torch.equal(chosen, chosen.sort().values)
    assert torch.equal(chosen, transfer.example_indices(1000, 50, seed=1))
    assert torch.equal(transfer.example_indices(30, None, seed=1), torch.arange(30))
    assert torch.equal(transfer.example_indices(30, 100, seed=1), torch.arange(30))
    with pytest.raises(IntriguingError, match="examples"):
        transfer.example_indices(30, 0, seed=1)


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


PAPERS_ATTACK = LBFGS(**transfer.PAPER_ATTACK)  # as in the tables: the paper's attack, without refinement


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
    targets = transfer.random_targets(y, seed=0, num_classes=3)
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
    figure = transfer.adversarial_figure(models, x, {n: a.adversarial for n, a in attacked.items()}, examples=2)
    assert len(figure.axes) == 2 * 4 * 2
    figure.savefig(tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the sections speak the paper's names, and the paper passes our claim checks ---------------------------


def test_experiments_and_row_names_are_the_papers():
    assert [c for c, _, _ in transfer.CROSS_MODEL.models] == list(reproduce.paper("table1")["rows"])
    assert [c for c, _, _ in transfer.CROSS_MODEL.models] + ["av_distortion"] == reproduce.paper("table2")["columns"]
    assert [c for c, _, _ in transfer.CROSS_TRAINING_SET.models] == reproduce.paper("table4")["columns"]
    assert [f"{c} (trained on {on})" for c, _, on in transfer.CROSS_TRAINING_SET.models] == list(
        reproduce.paper("table3")["rows"])
    columns = reproduce.paper("table4")["columns"]
    generated = columns + [transfer.gaussian_row(s) for s in transfer.TABLE4_NOISE] + [
        transfer.amplified_row(c, transfer.TABLE4_AMPLIFIED) for c in columns]
    assert {transfer.table4_row_name(r) for r in generated} == set(reproduce.paper("table4")["rows"])
    assert {transfer.gaussian_row(s) for s in transfer.TABLE2_NOISE} <= set(reproduce.paper("table2")["rows"])


def papers_result(key: str) -> dict:
    """The paper's table in our result format (point values only, as the paper has no intervals)."""
    cells = transfer.paper_cells(key)
    rows = {row: {c: {"value": v, "low": None, "high": None} for c, v in values.items()} for row, values in cells.items()}
    columns = reproduce.paper(key)["columns"]
    return {"columns": columns, "rows": rows, "attack_success": {r: {"value": 1.0} for r in rows}}


@pytest.mark.parametrize("key, check", [("table1", transfer.claims_table1), ("table2", transfer.claims_table2),
                                        ("table4", transfer.claims_table4)])
def test_the_papers_own_numbers_satisfy_every_claim_check(key, check):
    claims = check(papers_result(key))
    assert claims and all(claim.holds is True for claim in claims), [c.statement for c in claims if not c.holds]


def test_claims_fail_when_noise_beats_transferred_examples():
    result = papers_result("table2")
    for column in result["columns"]:
        result["rows"]["Gaussian noise, stddev=0.1"][column]["value"] = 0.99
    verdicts = {c.statement.split(":")[0]: c.holds for c in transfer.claims_table2(result)}
    assert list(verdicts.values()) == [True, False]

"""The oracles' report sections (exactness, lipschitz_gap) in their smoke preset, and ``intriguing exact`` end to end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from torch import nn

from intriguing import records, zoo
from intriguing.architectures import fully_connected
from intriguing.cli import main
from intriguing.oracles.compare import TIMES, joined, summarise
from intriguing.paper import SECTION_MODULES
from intriguing.paper.sections import exactness, lipschitz_gap
from intriguing.runner import Context
from intriguing.training import TrainRecipe

pytest.importorskip("pyscipopt")
pytest.importorskip("cvxpy")


def test_sections_are_registered_last():
    assert SECTION_MODULES[-2:] == ("exactness", "lipschitz_gap") or {"exactness", "lipschitz_gap"} <= set(SECTION_MODULES)


@pytest.mark.parametrize("module", [exactness, lipschitz_gap])
def test_smoke_run_renders_and_its_sanity_claim_holds(module, tmp_path):
    ctx = Context(preset="smoke", out=tmp_path, progress=False)
    result = module.SECTION.run(ctx, module.SECTION.chosen("smoke"), {})
    json.dumps(result)  # JSON-ready
    assert module.SECTION.render(result, ctx)
    assert module.SECTION.render(records.to_jsonable(result), ctx)  # as the report reads it back: NaN is null
    [claim] = module.SECTION.judge(result, ctx)
    assert claim.kind == "sanity" and claim.holds is True


def test_summary_orders_only_solved_examples_against_the_certified_bound():
    rows = [{"solved": True, "certified": 0.5, "exact": 1.0, "refined": 1.01, "paper": 1.1, "refined_ratio": 1.01,
             "paper_ratio": 1.1, "certified_ratio": 0.5, "seconds": 1.0, "cpu_seconds": 0.5},
            {"solved": False, "certified": 0.9, "exact": 0.8, "refined": 0.8, "paper": 0.8, "refined_ratio": 1.0,
             "paper_ratio": 1.0, "certified_ratio": 1.1, "seconds": 2.0, "cpu_seconds": 1.0}]
    s = summarise(rows)
    assert s["ordered"] and s["solved"] == 1 and s["median_refined_ratio"] == 1.01
    assert s["exact_cpu_seconds"] == 1.5
    rows[1]["refined"] = 0.7  # an exact point worse than the attack's start: a bug
    assert not summarise(rows)["ordered"]
    rows[1]["refined"], rows[0]["paper"] = 0.8, 0.9  # worse than the paper's attack's point: a bug too
    assert not summarise(rows)["ordered"]


def test_an_unsolved_example_renders_as_na_once_stored(tmp_path):
    """A failed attack or an unsolved problem is NaN, stored as JSON null: the report says n/a (it crashed)."""
    row = {"index": 0, "certified": 0.01, "exact": float("nan"), "status": "time limit", "refined": float("nan"),
           "paper": float("nan"), "refined_ratio": float("nan"), "paper_ratio": float("nan"), "seconds": 2.0,
           "cpu_seconds": 1.0}
    summary = {"solved": 0, "examples": 1, "ordered": True, **{f"{a}_{k}_ratio": None for a in ("median", "worst")
                                                               for k in ("refined", "paper")}}
    result = records.to_jsonable({"model": "m", "test_error": 0.5, "time_limit": 2.0, "rows": [row],
                                  "summary": summary})
    assert result["rows"][0]["exact"] is None
    text = exactness.render(result, Context(preset="smoke", out=tmp_path, progress=False))
    assert "| time limit | n/a |" in text


def test_parts_of_a_comparison_join_into_one_in_order():
    """The exactness section solves one example per unit of work; the parts join as one comparison."""
    def part(exact, seconds):
        rows = [{"index": i, "solved": True, "certified": e / 2, "exact": e, "refined": e, "paper": e,
                 "refined_ratio": 1.0, "paper_ratio": 1.0, "certified_ratio": 0.5, "seconds": 1.0, "cpu_seconds": 1.0}
                for i, e in enumerate(exact)]
        return {"rows": rows, "summary": {key: seconds for key in TIMES}, "attack_config": {"method": "LBFGS"}}

    whole = joined([part([0.1], 2.0), part([0.2, 0.3], 3.0)])
    assert [r["index"] for r in whole["rows"]] == [0, 1, 2] and [r["exact"] for r in whole["rows"]] == [0.1, 0.2, 0.3]
    assert whole["summary"]["examples"] == 3 and whole["summary"]["attack_seconds"] == 5.0
    assert whole["attack_config"] == {"method": "LBFGS"}


@pytest.fixture
def tiny_relu_zoo_model():
    name = "test-FC8-8-10(ReLU)"
    zoo.register(zoo.ModelSpec(name, "tiny ReLU net for the exact command's test",
                               lambda: fully_connected(8, 8, 10, activation=nn.ReLU),
                               TrainRecipe(epochs=1, weight_decay={}, batch_size=256, lr=3e-3)))
    yield name
    zoo._REGISTRY.pop(name)


def test_exact_command_runs_end_to_end(tiny_relu_zoo_model, tmp_path):
    out = tmp_path / "exact.json"
    result = CliRunner().invoke(main, ["exact", tiny_relu_zoo_model, "--n", "3", "--time-limit", "20",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "certified <= exact <= found: True" in result.output
    written = json.loads(out.read_text())
    assert len(written["per_example"]) == 3 and written["summary"]["ordered"]

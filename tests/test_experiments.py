"""The recorded recipe search (experiments/search.py): one tiny trial end to end, and its choices."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from intriguing import records

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "search.py"


@pytest.fixture(scope="module")
def search():
    spec = importlib.util.spec_from_file_location("experiments_search", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their annotations through sys.modules
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


FIELDS = {"label", "stage", "seed", "config", "recipe", "train_examples", "evaluated_on", "train_error",
          "validation_error", "test_error", "train_seconds", "git_describe", "date", "robustness"}


def test_tiny_trials_write_records_with_validation_or_test_error(search, tmp_path):
    specs = [search.trial("tiny", recipe={"epochs": 1}, limit=300, dropout=0.1, input_dropout=0.1),
             search.trial("tiny", recipe={"epochs": 1}, limit=300, stage="test", eval_examples=4)]
    found = search.run(specs, tmp_path)
    assert sorted(p.name for p in tmp_path.glob("*.json")) == ["tiny-s0-test.json", "tiny-s0-validate.json"]
    validate, test = found
    for record in found:
        assert FIELDS <= set(record)
        assert record["train_examples"] == 300 and record["train_seconds"] >= 0
    # the validation split is the fixed last 10,000 training images; the test set is only seen by "test"
    assert validate["evaluated_on"] == "train[50000:]" and 0 <= validate["validation_error"] <= 1
    assert validate["test_error"] is None and validate["robustness"] is None
    assert test["evaluated_on"] == "test" and test["validation_error"] is None and 0 <= test["test_error"] <= 1
    assert test["robustness"]["examples"] == 4
    assert validate["config"]["dropout"] == 0.1 and validate["recipe"]["epochs"] == 1
    # a rerun finds the records and trains nothing
    before = (tmp_path / "tiny-s0-test.json").stat().st_mtime_ns
    assert search.run(specs, tmp_path) == found
    assert (tmp_path / "tiny-s0-test.json").stat().st_mtime_ns == before
    assert "| tiny | test | 0 |" in search.summary(tmp_path)


def test_later_stages_choose_on_validation_only(search):
    def fake(label, error, test_error=None, **recipe):
        spec = search.trial(label, recipe=recipe)
        full = spec.train_recipe()
        return {"label": label, "config": records.to_jsonable(spec.__dict__),
                "recipe": records.to_jsonable(full.__dict__), "validation_error": error, "test_error": test_error}

    screen = [fake("screen-a", 0.03, optimizer="adam", lr=1e-3, epochs=15),
              fake("screen-b", 0.02, optimizer="sgd", lr=0.1, epochs=15)]
    long = search.baseline_long(screen)
    assert all(dict(t.recipe).get("optimizer", "adam") == "sgd" for t in long if t.label.startswith("long-"))
    done = screen + [fake("zoo-recipe-e40", 0.025), fake("long-x", 0.019, optimizer="sgd", lr=0.1, epochs=60)]
    final = search.baseline_test(done)
    assert [(t.label, t.seed, t.stage) for t in final][:2] == [("long-x", 0, "test"), ("zoo-recipe-e40", 0, "test")]
    assert {t.seed for t in final} == {0, 1, 2}


def test_a_tiny_adversarial_trial_fills_and_refreshes_its_pools(search, tmp_path):
    spec = search.trial("tiny-adv", recipe={"epochs": 3, "batch_size": 100}, limit=300, layers=("input", "h1"),
                        pools={"pool_size": 8, "refresh_every": 3, "warmup_epochs": 1, "pool_batch": 4})
    [record] = search.run([spec], tmp_path)
    assert record["config"]["layers"] == ["input", "h1"] and record["attack_seconds"] > 0
    assert 0 <= record["validation_error"] <= 1 and record["test_error"] is None
    assert search.adv_test([record])[0].layers == ("input", "h1")

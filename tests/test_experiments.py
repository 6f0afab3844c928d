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


def _tested(search, folder, label, errors, *, model="FC100-100-10", **fields):
    spec = search.trial(label, model=model, stage="test", **fields)
    for seed, error in enumerate(errors):
        records.write_json(folder / f"{label}-s{seed}-test.json", {
            "label": label, "seed": seed, "stage": "test", "test_error": error,
            "config": records.to_jsonable(spec.__dict__), "recipe": records.to_jsonable(spec.train_recipe().__dict__),
            "robustness": {"mean_distortion": 0.05}})


def test_compare_tabulates_the_variants_and_tests_each_pair_of_one_model(search, tmp_path):
    from scipy import stats

    _tested(search, tmp_path, "wd", [0.020, 0.021, 0.022])
    _tested(search, tmp_path, "drop", [0.016, 0.015, 0.017], dropout=0.1)
    _tested(search, tmp_path, "adv", [0.018, 0.019, 0.017], layers=("input",))
    _tested(search, tmp_path, "big", [0.015, 0.016, 0.014], model="FC200-200-10", dropout=0.1)
    table = search.compare([tmp_path])
    assert "| FC100-100-10 | weight decay + dropout 0.1 | drop |" in table
    assert "| FC100-100-10 | adversarial (input) | adv |" in table
    welch = stats.ttest_ind([2.0, 2.1, 2.2], [1.6, 1.5, 1.7], equal_var=False).pvalue
    assert f"| drop | wd | 1.60 | 2.10 | -0.50 | {welch:.3f} |" in table
    assert "| big |" not in table.split("| A | B |")[1]  # FC200-200-10 has nothing of its own model to compare with


def test_the_weight_decay_arm_is_chosen_among_runs_without_dropout(search):
    def fake(label, error, dropout=0.0):
        spec = search.trial(label, recipe={"epochs": 60}, dropout=dropout)
        return {"label": label, "stage": "validate", "validation_error": error,
                "config": records.to_jsonable(spec.__dict__), "recipe": records.to_jsonable(spec.train_recipe().__dict__)}

    done = [fake("long-a", 0.019), fake("long-a-drop0.1", 0.016, dropout=0.1), fake("nodrop-b", 0.020)]
    chosen = search.baseline_test_wd(done)
    assert {(t.label, t.stage, t.dropout) for t in chosen} == {("long-a", "test", 0.0)}
    assert [t.seed for t in chosen] == [0, 1, 2]

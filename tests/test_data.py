"""IDX reading, checksum verification, every corruption case, and the P1/P2 split."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from intriguing import data
from intriguing.errors import IntriguingError


def make_dataset(folder, n_train=12, n_test=5, checksums=True, seed=0):
    """A tiny dataset in MNIST's layout, optionally with a SHA256SUMS.raw like the bundled one."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sums = []
    for part, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, array in zip(data.FILES[part], (images, labels)):
            data.write_idx(folder / f"{stem}.gz", array)
            sums.append(f"{hashlib.sha256(gzip.decompress((folder / f'{stem}.gz').read_bytes())).hexdigest()}  {stem}")
    if checksums:
        (folder / data.CHECKSUM_FILE).write_text("\n".join(sums) + "\n")
    return folder


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, dtype, compress):
    offset = 0 if dtype == np.uint8 else -5  # signed types get negative values too
    array = (np.arange(2 * 3 * 4) + offset).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "a.idx"
    data.write_idx(path, array, compress=compress)
    back = data.read_idx(path)
    assert back.shape == array.shape and back.dtype.kind == array.dtype.kind
    np.testing.assert_array_equal(back, array)


def test_bundled_mnist_shapes_ranges_and_label_counts():
    x, y = data.load_mnist("test")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (10_000,) and y.dtype == torch.int64
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # Label counts from the dataset's README.
    assert torch.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_split_is_disjoint_covers_everything_and_is_fixed():
    p1, p2 = data.split_indices(60_000)
    assert len(p1) == len(p2) == 30_000
    assert len(np.intersect1d(p1, p2)) == 0
    assert np.array_equal(np.union1d(p1, p2), np.arange(60_000))
    again = data.split_indices(60_000)
    assert np.array_equal(again[0], p1)
    x1, y1 = data.load_mnist("P1")
    x, y = data.load_mnist("train")
    assert torch.equal(x1, x[torch.from_numpy(p1)]) and torch.equal(y1, y[torch.from_numpy(p1)])


def test_other_dataset_via_argument_and_environment(tmp_path, monkeypatch):
    folder = make_dataset(tmp_path / "tiny")
    x, y = data.load_mnist("train", folder)
    assert x.shape == (12, 1, 28, 28)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folder))
    assert data.load_mnist("test")[0].shape == (5, 1, 28, 28)
    assert data.fingerprint(folder) != data.fingerprint(data.bundled_dir())


def test_a_dataset_rewritten_while_the_process_runs_is_read_again(tmp_path):
    """The in-memory cache is keyed by each file's size and modification time, not by its path alone."""
    folder = make_dataset(tmp_path / "d", seed=0)
    before, fingerprint = data.load_mnist("train", folder), data.fingerprint(folder)
    make_dataset(folder, n_train=7, seed=1)
    after = data.load_mnist("train", folder)
    assert after[0].shape == (7, 1, 28, 28) and not torch.equal(after[1], before[1][:7])
    assert data.fingerprint(folder) != fingerprint


def test_raw_files_without_checksums_are_read(tmp_path):
    folder = make_dataset(tmp_path / "raw", checksums=False)
    for gz in folder.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    assert data.load_mnist("train", folder)[1].shape == (12,)


def _corrupt(folder, stem, transform):
    path = folder / f"{stem}.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(transform(path.read_bytes(), raw))


@pytest.mark.parametrize(
    "case, transform, message",
    [
        ("truncated gzip", lambda gz, raw: gz[: len(gz) // 2], "corrupt or truncated gzip"),
        ("bad magic", lambda gz, raw: gzip.compress(b"\x01\x02" + raw[2:]), "bad magic"),
        ("truncated payload", lambda gz, raw: gzip.compress(raw[:-10]), "truncated or corrupt"),
        ("flipped pixel", lambda gz, raw: gzip.compress(raw[:-1] + bytes([raw[-1] ^ 1])), "SHA-256"),
    ],
)
def test_corrupt_files_give_one_clear_error_naming_the_file(tmp_path, case, transform, message):
    folder = make_dataset(tmp_path / case.replace(" ", "_"))
    stem = data.FILES["train"][0]
    _corrupt(folder, stem, transform)
    with pytest.raises(IntriguingError, match=message) as info:
        data.load_mnist("train", folder)
    assert stem in str(info.value)


def test_count_mismatch_between_images_and_labels(tmp_path):
    folder = make_dataset(tmp_path / "mismatch", checksums=False)
    data.write_idx(folder / f"{data.FILES['train'][1]}.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(IntriguingError, match="12 images but .* 11 labels"):
        data.load_mnist("train", folder)


def test_missing_file_and_missing_folder_and_unknown_split(tmp_path):
    folder = make_dataset(tmp_path / "missing")
    (folder / f"{data.FILES['test'][0]}.gz").unlink()
    with pytest.raises(IntriguingError, match="missing t10k-images"):
        data.load_mnist("test", folder)
    with pytest.raises(IntriguingError, match="does not exist"):
        data.load_mnist("test", tmp_path / "nowhere")
    with pytest.raises(IntriguingError, match="unknown split 'valid'"):
        data.load_mnist("valid")


def test_bundled_copy_matches_shared_checksums():
    shared = data.bundled_dir()
    for stems in data.FILES.values():
        for stem in stems:
            assert data._checksums(shared)[stem] == hashlib.sha256(gzip.decompress((shared / f"{stem}.gz").read_bytes())).hexdigest()


def test_check_fits_probes_the_model_and_leaves_no_trace(tmp_path):
    """Other image sizes are fine for a model built for them; labels must fit its outputs; the probe
    changes neither the random state nor the train/eval mode (seeded training must not notice it)."""
    folder = make_dataset(tmp_path / "fits")
    images = torch.rand(4, 1, 32, 32)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(32 * 32, 10)).train()
    state = torch.random.get_rng_state()
    data.check_fits(model, images, torch.tensor([0, 3, 9, 1]), name="mine", data_dir=folder)
    assert torch.equal(torch.random.get_rng_state(), state) and model.training
    with pytest.raises(IntriguingError, match=r"labels range over 0\.\.12, but model mine has 10 outputs"):
        data.check_fits(model, images, torch.tensor([0, 12, 3, 1]), name="mine", data_dir=folder)
    with pytest.raises(IntriguingError, match="model mine fails on one 28x28 image of .*check that the model takes"):
        data.check_fits(model, torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.int64), name="mine",
                        data_dir=folder)
    with pytest.raises(IntriguingError, match="no images"):
        data.check_fits(model, images[:0], torch.zeros(0, dtype=torch.int64), name="mine", data_dir=folder)


def test_split_sizes_are_counted_from_the_labels():
    assert [data.split_size(split) for split in data.SPLITS] == [60_000, 10_000, 30_000, 30_000]
    with pytest.raises(IntriguingError, match="unknown split 'P3'"):
        data.split_size("P3")

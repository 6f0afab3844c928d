"""Property-based fuzzing of every reader of stored files: damage never passes for data.

Each test damages a valid file at random (a truncation, or one byte XOR-ed with a random non-zero
value) and states what a reader may honestly do with it. Where the format carries a check (gzip's
CRC-32, the dataset's SHA256SUMS.raw, the checkpoint's integrity hash), the answer is the exact
original or an :class:`IntriguingError`. Where it carries none (a raw IDX file without a checksum
file), no reader can tell a flipped pixel from a real one; the honest promise there is narrower
and says so.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intriguing import checkpoint, data, records, runner
from intriguing.errors import IntriguingError
from intriguing.runner import storage

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def damage(draw, size: int):
    """("cut", n): keep the first n < size bytes; ("flip", i, x): XOR byte i with x != 0."""
    if draw(st.booleans()):
        return ("cut", draw(st.integers(0, size - 1)))
    return ("flip", draw(st.integers(0, size - 1)), draw(st.integers(1, 255)))


def damaged(blob: bytes, how: tuple) -> bytes:
    if how[0] == "cut":
        return blob[: how[1]]
    _, index, mask = how
    return blob[:index] + bytes([blob[index] ^ mask]) + blob[index + 1 :]


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as path:
        yield Path(path)


# --- IDX ------------------------------------------------------------------------------------------

ARRAY = np.random.default_rng(0).integers(0, 256, size=(3, 5, 7), dtype=np.uint8)
HEADER = 4 + 4 * ARRAY.ndim
TYPE_CODE_BYTE = 2


def idx_bytes(array: np.ndarray, compress: bool, where: Path) -> bytes:
    data.write_idx(where, array, compress=compress)
    return where.read_bytes()


@FUZZ
@given(st.data())
def test_gzip_idx_gives_the_original_or_one_error(folder, draws):
    """gzip's CRC-32 and length trailer catch every change of the content: a damaged ``.gz`` reads
    as the original (a flip in the header's time stamp or OS byte changes no data) or fails."""
    path = folder / "images.idx.gz"
    blob = idx_bytes(ARRAY, True, path)
    path.write_bytes(damaged(blob, draws.draw(damage(len(blob)))))
    try:
        got = data.read_idx(path)
    except IntriguingError as e:
        assert str(path) in str(e)
        return
    np.testing.assert_array_equal(got, ARRAY)
    assert got.dtype == ARRAY.dtype


@FUZZ
@given(st.data())
def test_raw_idx_without_checksum_is_read_faithfully_or_refused(folder, draws):
    """A raw IDX file has no check of its own, so a flipped pixel cannot be noticed by its reader.

    What the reader does promise: every truncation and every damaged header field fails (magic,
    dimension count, sizes), except a type code swapped for another of the same width (uint8 for
    int8); whatever it accepts is exactly the bytes on disk, so a flip changes exactly the one
    element that holds the byte, never its shape or any other element. The loader of a dataset
    refuses non-uint8 images, and a folder with ``SHA256SUMS.raw`` catches the rest (next test).
    """
    path = folder / "images.idx"
    blob = idx_bytes(ARRAY, False, path)
    how = draws.draw(damage(len(blob)))
    path.write_bytes(damaged(blob, how))
    try:
        got = data.read_idx(path)
    except IntriguingError:
        return
    assert how[0] == "flip", "a truncated raw IDX file was accepted"
    index = how[1]
    assert index >= HEADER or index == TYPE_CODE_BYTE, f"header byte {index} damaged and accepted"
    assert got.shape == ARRAY.shape and got.dtype.itemsize == ARRAY.dtype.itemsize
    assert got.tobytes() == damaged(blob, how)[HEADER:]
    changed = np.flatnonzero(got.view(np.uint8).ravel() != ARRAY.ravel())
    assert changed.tolist() == ([index - HEADER] if index >= HEADER else [])


def tiny_dataset(where: Path) -> dict[str, bytes]:
    """A 4-image dataset in MNIST's layout with its SHA256SUMS.raw, the train images stored raw."""
    rng = np.random.default_rng(1)
    sums, blobs = [], {}
    for part in ("train", "test"):
        images, labels = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8), rng.integers(0, 10, 4).astype(np.uint8)
        for stem, array in zip(data.FILES[part], (images, labels)):
            raw = stem == data.FILES["train"][0]
            blobs[stem] = idx_bytes(array, not raw, where / (stem if raw else f"{stem}.gz"))
            content = blobs[stem] if raw else gzip.decompress(blobs[stem])
            sums.append(f"{hashlib.sha256(content).hexdigest()}  {stem}")
    (where / data.CHECKSUM_FILE).write_text("\n".join(sums) + "\n")
    return blobs


@FUZZ
@given(st.data())
def test_dataset_with_checksums_gives_the_original_or_one_error(folder, draws):
    """With ``SHA256SUMS.raw`` (as the bundled MNIST has) a flipped pixel is caught too."""
    where = folder / "dataset"
    where.mkdir(exist_ok=True)
    blobs = tiny_dataset(where)
    data._read_verified.cache_clear()  # same size, rewritten within the file system's timestamp granularity
    original = data.load_mnist("train", where)
    stem = data.FILES["train"][0]
    (where / stem).write_bytes(damaged(blobs[stem], draws.draw(damage(len(blobs[stem])))))
    data._read_verified.cache_clear()
    try:
        got = data.load_mnist("train", where)
    except IntriguingError as e:
        assert stem in str(e)
        return
    assert all(torch.equal(a, b) for a, b in zip(got, original))


# --- checkpoints ----------------------------------------------------------------------------------


def tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Sigmoid(), torch.nn.Linear(2, 2))


@FUZZ
@given(st.data())
def test_checkpoint_gives_the_original_weights_and_metadata_or_one_error(folder, draws):
    """The integrity hash covers the tensors and the metadata (which holds the training record
    whose errors ``train`` prints), so a damaged checkpoint never loads as other numbers."""
    path = folder / "model.safetensors"
    model = tiny_model(0)
    metadata = {"result": json.dumps({"test_error": 0.0755, "train_error": 0.061})}
    checkpoint.save_model(model, path, metadata)
    blob = path.read_bytes()
    path.write_bytes(damaged(blob, draws.draw(damage(len(blob)))))
    try:
        loaded = checkpoint.load_weights(tiny_model(1), path, require_hash=True)
        stored_metadata = checkpoint.read_metadata(path)
    except IntriguingError as e:
        assert str(path) in str(e)
        return
    expected = model.state_dict()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
    assert {k: v for k, v in stored_metadata.items() if k != checkpoint.INTEGRITY_KEY} == metadata


# --- stored sections ------------------------------------------------------------------------------


def _run(ctx, settings, results):
    return {"error": 0.0755, "rows": [[1, 2.5], [3, None]], "name": "FC10(1e-4)"}


SECTION = runner.Section(key="fuzzed", title="Fuzzed", run=_run, render=lambda result, ctx: "",
                         settings=runner.preset_settings(smoke={"n": 1}, default={"n": 2}, full={"n": 3}))


def _stored_after(ctx, draws) -> tuple[dict, dict | None]:
    original = storage.store(ctx, SECTION, _run(ctx, None, {}), seconds=1.5)
    path = storage.section_path(ctx, SECTION.key)
    blob = path.read_bytes()
    path.write_bytes(damaged(blob, draws.draw(damage(len(blob)))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged file is reported with a warning and recomputed
        return original, storage.stored(ctx, SECTION)


@FUZZ
@given(st.data())
def test_damaged_section_is_never_fatal(folder, draws):
    """A damaged section file is recomputed (None) or read; reading it never raises."""
    ctx = runner.Context(preset="smoke", out=folder / "run", progress=False)
    original, got = _stored_after(ctx, draws)
    assert got is None or (got["config_hash"] == original["config_hash"] and "result" in got)


@FUZZ
@given(st.data())
def test_damaged_section_is_the_original_or_recomputed(folder, draws):
    """The property the issue asks for: never different data."""
    ctx = runner.Context(preset="smoke", out=folder / "run", progress=False)
    original, got = _stored_after(ctx, draws)
    assert got is None or got == original


def test_json_round_trip_is_exact(folder):
    """The baseline the fuzzing above starts from: what is stored reads back as itself."""
    obj = {"a": [1, 2.5, None], "b": {"c": "d"}}
    records.write_json(folder / "x.json", obj)
    assert records.read_json(folder / "x.json") == obj

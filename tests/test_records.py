"""Records: JSON conversion keeps numbers as numbers; writes are atomic and readable like any file."""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest
import torch

from intriguing import records


@dataclasses.dataclass
class Row:
    name: str
    values: torch.Tensor
    mean: float


def test_to_jsonable_turns_tensors_and_numpy_into_plain_numbers():
    row = Row("a", torch.tensor([1.5, 2.0]), np.float32(0.25))
    assert records.to_jsonable(row) == {"name": "a", "values": [1.5, 2.0], "mean": 0.25}
    assert records.to_jsonable({"x": math.nan, 1: np.arange(2)}) == {"x": None, "1": [0, 1]}


def test_write_json_round_trip_and_no_temporary_files_left(tmp_path):
    path = tmp_path / "deep" / "r.json"
    records.write_json(path, {"a": [1, 2.5]})
    assert records.read_json(path) == {"a": [1, 2.5]}
    assert os.listdir(path.parent) == ["r.json"]


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        records.write_bytes(tmp_path / "report.html", b"<html></html>")
    finally:
        os.umask(old)
    assert (tmp_path / "report.html").stat().st_mode & 0o777 == 0o644


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "r.json"
    records.write_json(path, {"v": 1})
    with pytest.raises(TypeError):
        records.write_json(path, {"v": object()})
    assert records.read_json(path) == {"v": 1}


def test_a_damaged_json_file_is_one_clear_error(tmp_path):
    from intriguing.errors import IntriguingError

    path = tmp_path / "r.json"
    records.write_json(path, {"v": [1, 2, 3]})
    path.write_bytes(path.read_bytes()[:7])
    with pytest.raises(IntriguingError, match=r"r\.json is damaged \(JSONDecodeError"):
        records.read_json(path)


def test_the_environment_names_the_code_that_ran():
    env = records.environment()
    assert env["git"]  # `git describe --always --dirty` in a checkout, else says it is not one
    assert {"intriguing", "torch", "numpy", "python"} <= set(env)

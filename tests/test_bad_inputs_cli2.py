"""Command-line options with values that made a command crash, write where nobody asked, or answer
something else than was asked: each is one clear line and exit status 2 now, before any work."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from intriguing import cli, paper, zoo
from intriguing.errors import IntriguingError
from intriguing.models import class_index
from intriguing.runner import backends


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli.main, list(args), env=env)


def one_line(result, status: int = 2) -> str:
    """The single error line a failed command printed (no traceback, the given exit status)."""
    assert "Traceback" not in result.output
    assert result.exit_code == status, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("error:", "Error:"))]
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture(autouse=True)
def no_work(monkeypatch):
    """Every case below must fail before a model trains, loads or a section starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the option was checked")
    monkeypatch.setattr(zoo, "trained", refuse)
    monkeypatch.setattr(paper, "section_list", refuse)
    monkeypatch.setattr(backends, "default_workers", lambda: 1)


@pytest.mark.parametrize("args", [
    ("reproduce", "--preset", "smoke", "--out", ""),
    ("reproduce", "--preset", "smoke", "--cache", ""),
    ("attack", "FC10(1e-4)", "--out", ""),
    ("attack", "FC10(1e-4)", "--save", ""),
    ("transfer", "FC10(1e-4)", "--out", ""),
    ("units", "FC10(1e-4)", "--out", ""),
    ("adv-train", "FC100-100-10", "--out", ""),
    ("exact", "FC20-20-10(ReLU)", "--out", ""),
    ("lipschitz", "FC10(1e-4)", "--json", ""),
])
def test_an_empty_path_is_refused(args, tmp_path, monkeypatch):
    """A bug: ``reproduce --out ''`` wrote the whole run (sections/, report.md, ...) into the current folder,
    ``attack --save ''`` its images there, and ``attack --out ''`` wrote nothing, silently."""
    monkeypatch.chdir(tmp_path)
    option = next(a for a in args if a.startswith("--") and args[args.index(a) + 1] == "")
    line = one_line(invoke(*args))
    assert line == f"Error: Invalid value for '{option}': an empty path; give a file or folder name"
    assert list(tmp_path.iterdir()) == []


def test_only_with_no_section_is_refused():
    """A bug: ``--only ''`` (or ``--only ,``) ran every section, minutes of work nobody asked for."""
    for value in ("", ",", " , "):
        line = one_line(invoke("reproduce", "--preset", "smoke", "--only", value))
        assert line.startswith("error: --only: no section named in") and "e.g. --only table1" in line


@pytest.mark.parametrize("how", ["option", "env"])
def test_more_threads_than_torch_can_start_is_refused(how):
    """A bug: ``--threads 99999`` crashed the interpreter (segmentation fault, exit status 139)."""
    code = ("import sys; from intriguing import cli; cli.main(sys.argv[1:], prog_name='intriguing')")
    args, env = ((["--threads", "99999", "models"], {}) if how == "option"
                 else (["models"], {"INTRIGUING_THREADS": "99999"}))
    done = subprocess.run([sys.executable, "-c", code, *args], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Invalid value for '--threads': 99999 is not in the range 1<=x<=1024" in done.stderr


@pytest.mark.parametrize("text", ["-1", "-3", " -1"])
def test_a_negative_class_index_is_refused(text):
    """A bug: ``--target -1`` attacked class 1 (class names compare with '-' read as a space)."""
    names = [str(i) for i in range(10)]
    with pytest.raises(IntriguingError, match=r"class index -\d: the model has classes 0 to 9"):
        class_index(names, text)
    assert class_index(["-1", "0"], "-1") == 0  # a class really named so is still found


@pytest.mark.skipif(not backends.ray_installed(), reason="the ray extra is not installed")
def test_a_ray_instance_that_fails_to_start_is_one_line(monkeypatch):
    """A bug: on a busy machine ray.init raised a bare Exception ('The current node timed out during
    startup...') and ``reproduce --workers 2`` ended in a traceback."""
    import ray

    def timed_out(*args, **kwargs):
        raise Exception("The current node timed out during startup. This could happen because some of the raylet "
                        "failed to startup or the GCS has become overloaded.")
    monkeypatch.setattr(ray, "init", timed_out)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    line = one_line(invoke("reproduce", "--preset", "smoke", "--workers", "2", "--only", "table1"))
    assert line == ("error: cannot start a local Ray instance: The current node timed out during startup. This "
                    "could happen because some of the raylet failed to startup or the GCS has become overloaded.")


def test_running_out_of_memory_is_one_line(monkeypatch):
    """A bug: ``units ... --directions 99999999999`` ended in numpy's _ArrayMemoryError traceback (7.28 TiB)."""
    import numpy as np

    def too_big(*args, **kwargs):
        np.zeros((10, 99_999_999_999))  # numpy's own error, as the units study raised it
    monkeypatch.setattr(zoo, "trained", too_big)
    line = one_line(invoke("train", "FC10(1e-4)"))
    assert line.startswith("error: out of memory (Unable to allocate 7.28 TiB for an array with shape "
                           "(10, 99999999999)")
    assert line.endswith("ask for less at once: fewer examples, directions or images, or a smaller --batch-size")


def test_an_empty_data_dir_is_refused_not_read_as_the_bundled_mnist():
    """A bug: ``--data-dir ''`` (a variable that expanded to nothing) silently ran on the bundled MNIST."""
    line = one_line(invoke("reproduce", "--preset", "smoke", "--data-dir", "", "--out", "run"))
    assert "--data-dir" in line and "empty" in line


@pytest.mark.parametrize("value", ["nan", "inf", "-0.1"])
def test_gaussian_stddevs_must_be_finite_and_non_negative(value):
    """A bug: ``--gaussian nan`` passed the option's check and failed later naming ``stddev:``."""
    assert "--gaussian: stddevs must be finite and >= 0" in one_line(invoke("transfer", "FC10(1e-4)", "--gaussian",
                                                                           value))

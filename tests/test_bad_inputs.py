"""A hostile user's inputs: each gets one clear line and exit status 2, never a traceback.

Every case runs through the command line (click's runner) and, where the library is the place that
checks, through the API too. "Before training" is asserted by making training itself fail the test.
The damaged-file cases also check that nothing already stored was changed.

The tests run as root in CI, and root may write into read-only folders, so read-only cases cannot
fail here; the cases below use a *file* where a folder is expected, which fails for every user.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from intriguing import cli, data, paper, runner, zoo
from intriguing.errors import IntriguingError
from intriguing.runner import backends

needs_ray = pytest.mark.skipif(not backends.ray_installed(), reason="the ray extra is not installed")


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli.main, list(args), env=env)


def one_line(result, status: int = 2) -> str:
    """The single non-blank line a failed command printed (no traceback, the given exit status)."""
    assert "Traceback" not in result.output
    assert result.exit_code == status, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def make_dataset(folder: Path, size: int = 28, classes: int = 10, n: tuple[int, int] = (20, 6)) -> Path:
    """A tiny dataset in MNIST's layout (gzip, no checksum file) with the given image size and classes."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for part, count in zip(("train", "test"), n):
        images, labels = data.FILES[part]
        data.write_idx(folder / f"{images}.gz", rng.integers(0, 256, (count, size, size), dtype=np.uint8))
        data.write_idx(folder / f"{labels}.gz", (np.arange(count) % classes).astype(np.uint8))
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    """``reproduce`` runs its work in this process: starting a Ray cluster would dwarf these tests."""
    monkeypatch.setattr(backends, "default_workers", lambda: 1)


@pytest.fixture
def no_training(monkeypatch):
    """Training fails the test: the checks under test must come first."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before the input was checked")
    monkeypatch.setattr(zoo, "fit", refuse)


# --- item 4: a damaged .gz in --data-dir --------------------------------------------------------


def _flip_raising(blob: bytes, wanted: type[BaseException]) -> bytes:
    """``blob`` with one byte flipped such that gzip's decompressor raises ``wanted`` (found by search)."""
    for index in range(10, len(blob)):
        for mask in (0xFF, 0x01, 0x80, 0x10):
            bad = blob[:index] + bytes([blob[index] ^ mask]) + blob[index + 1 :]
            try:
                gzip.decompress(bad)
            except wanted:
                return bad
            except Exception:
                continue
    raise AssertionError(f"no single flip raises {wanted.__name__}")


@pytest.mark.parametrize("damage", ["zlib.error", "EOFError", "BadGzipFile"])
def test_damaged_gzip_in_data_dir_is_one_line_naming_the_file(tmp_path, damage, no_training):
    folder = make_dataset(tmp_path / "data")
    path = folder / f"{data.FILES['train'][0]}.gz"
    blob = path.read_bytes()
    if damage == "EOFError":
        bad = blob[:-20]
    elif damage == "BadGzipFile":
        bad = _flip_raising(blob, gzip.BadGzipFile)
    else:
        bad = _flip_raising(blob, zlib.error)
    path.write_bytes(bad)
    before = snapshot(folder)
    line = one_line(invoke("train", "FC10(1e-4)", "--data-dir", str(folder)))
    assert line.startswith(f"error: {path}: corrupt or truncated gzip data") and "replace the file" in line
    with pytest.raises(IntriguingError, match="corrupt or truncated gzip"):
        data.load_mnist("train", folder)
    assert snapshot(folder) == before


# --- items 5 and 6: data that does not fit the model ---------------------------------------------


@pytest.mark.parametrize("name", ["FC10(1e-4)", "ConvNet"])
def test_images_of_another_size_are_refused_before_training(tmp_path, name, no_training):
    folder = make_dataset(tmp_path / "data32", size=32)
    line = one_line(invoke("train", name, "--data-dir", str(folder)))
    assert line == (f"error: {folder / data.FILES['train'][0]}.gz: images are 32x32, but model {name} takes "
                    "28x28 images (shape (N, 1, 28, 28)); use a dataset of 28x28 images in MNIST's layout")
    with pytest.raises(IntriguingError, match="images are 32x32"):
        zoo.trained(name, data_dir=folder, progress=False)


def test_test_images_of_another_size_are_refused_before_training(tmp_path, no_training):
    """The test split is checked too, before training, not after it."""
    folder = make_dataset(tmp_path / "mixed")
    make_dataset(tmp_path / "data32", size=32)
    for stem in data.FILES["test"]:
        (folder / f"{stem}.gz").write_bytes((tmp_path / "data32" / f"{stem}.gz").read_bytes())
    line = one_line(invoke("train", "FC10(1e-4)", "--data-dir", str(folder)))
    assert f"{data.FILES['test'][0]}.gz: images are 32x32" in line


def test_labels_beyond_the_models_classes_are_refused_before_training(tmp_path, no_training):
    folder = make_dataset(tmp_path / "data20", classes=20, n=(40, 6))
    line = one_line(invoke("train", "FC10(1e-4)", "--data-dir", str(folder)))
    assert line == (f"error: {folder / data.FILES['train'][1]}.gz: labels range over 0..19, but model FC10(1e-4) "
                    "has 10 outputs (classes 0..9); use a dataset labelled 0..9, or register a model with 20 "
                    "outputs (intriguing.zoo.register)")


def test_non_byte_images_are_refused(tmp_path):
    """MNIST's layout has pixels 0-255; int8 (one flipped bit of the type code) would read as negative."""
    folder = make_dataset(tmp_path / "int8")
    path = folder / f"{data.FILES['train'][0]}.gz"
    data.write_idx(path, data.read_idx(path).view(np.int8))
    with pytest.raises(IntriguingError, match="expected unsigned-byte images"):
        data.load_mnist("train", folder)


def test_the_fit_check_changes_no_result(tmp_path):
    """The probe forward pass must leave the seeded training untouched (same seed, same weights)."""
    folder = make_dataset(tmp_path / "ok")
    config = zoo.TrainConfig("FC10(1e-4)", overrides=(("epochs", 1),))
    checked = zoo.train(config, data_dir=folder, progress=False).model
    model = zoo.build("FC10(1e-4)", seed=0)
    images, labels = data.load_mnist("train", folder)
    zoo.fit(model, images, labels, config.recipe, seed=0, progress=False)
    assert all((a == b).all() for a, b in zip(checked.state_dict().values(), model.state_dict().values()))


# --- item 14: a missing data folder; item 7: a cache that is a file ------------------------------


def test_missing_data_dir_flag_does_not_blame_the_environment(tmp_path):
    line = one_line(invoke("train", "FC10(1e-4)", "--data-dir", str(tmp_path / "nowhere")))
    assert line == (f"error: data directory {tmp_path / 'nowhere'} (from --data-dir) does not exist; pass a folder "
                    "holding the four MNIST-layout IDX files, or leave --data-dir out to use the bundled MNIST")
    assert data.DATA_DIR_ENV not in line


def test_missing_data_dir_from_the_environment_says_unset_it(tmp_path):
    line = one_line(invoke("train", "FC10(1e-4)", env={data.DATA_DIR_ENV: str(tmp_path / "nowhere")}))
    assert f"(from {data.DATA_DIR_ENV}) does not exist" in line and "unset it" in line


def test_missing_data_dir_argument_in_the_api(tmp_path, monkeypatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(IntriguingError, match=r"\(from data_dir\) does not exist.*leave data_dir out"):
        data.load_mnist("train", tmp_path / "nowhere")


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_line(invoke("train", "FC10(1e-4)", "--data-dir", str(tmp_path / "file")))
    assert "(from --data-dir) is a file, not a folder" in line


def test_cache_that_is_a_file_fails_before_training(tmp_path, no_training):
    """Item 7: a file as the cache. (Read-only folders cannot fail as root; see the module docstring.)"""
    (tmp_path / "cache").write_text("not a folder")
    line = one_line(invoke("train", "FC10(1e-4)", env={zoo.CACHE_ENV: str(tmp_path / "cache")}))
    assert line == (f"error: checkpoint cache {tmp_path / 'cache' / 'models'}: {tmp_path / 'cache'} is a file, "
                    "not a folder; choose another path")
    assert (tmp_path / "cache").read_text() == "not a folder"


def test_reproduce_with_a_cache_or_output_that_is_a_file_fails_before_any_section(tmp_path, monkeypatch):
    monkeypatch.setattr(paper, "section_list", lambda: pytest.fail("a section started before the paths were checked"))
    (tmp_path / "file").write_text("x")
    line = one_line(invoke("reproduce", "--preset", "smoke", "--out", str(tmp_path / "run"),
                           "--cache", str(tmp_path / "file")))
    assert line.startswith(f"error: checkpoint cache {tmp_path / 'file'}: ") and "is a file, not a folder" in line
    monkeypatch.setattr(paper, "section_list", lambda: [])
    for out in (tmp_path / "file", tmp_path / "file" / "run"):
        line = one_line(invoke("reproduce", "--preset", "smoke", "--out", str(out)))
        assert line == f"error: output folder {out}: {tmp_path / 'file'} is a file, not a folder; choose another path"


# --- item 16: a global option after the command ------------------------------------------------


def test_global_option_after_the_command_says_where_it_goes():
    result = invoke("train", "FC10(1e-4)", "--threads", "2")
    assert result.exit_code == 2 and "Traceback" not in result.output
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert error == ["Error: No such option for this command: --threads. It is a global option and goes "
                     "before the command: intriguing --threads 2 train 'FC10(1e-4)'"]


def test_unknown_option_keeps_clicks_message():
    result = invoke("train", "FC10(1e-4)", "--bogus")
    assert result.exit_code == 2 and "No such option" in result.output and "global option" not in result.output


# --- interruptions ------------------------------------------------------------------------------


def _sections(calls: list[str], interrupt: str | None) -> list[runner.Section]:
    """Two made-up sections; ``interrupt`` names the one that gets Ctrl-C."""
    def section(key: str) -> runner.Section:
        def run(ctx, settings, results):
            calls.append(key)
            if key == interrupt:
                raise KeyboardInterrupt
            return {"value": len(calls)}
        return runner.Section(key=key, title=f"Section {key}", run=run, render=lambda result, ctx: "",
                              settings=runner.preset_settings(smoke={}, default={}, full={}))
    return [section("a"), section("b")]


def _whole(run_folder: Path) -> list[str]:
    """Every stored file parses (JSON) and no temporary file is left behind; returns the section names."""
    assert not [p for p in run_folder.rglob("*") if p.name.endswith(".tmp")]
    for path in run_folder.rglob("*.json"):
        json.loads(path.read_text())
    return sorted(p.name for p in (run_folder / "sections").glob("*.json"))


def test_ctrl_c_during_reproduce_says_files_are_whole_and_rerun_resumes(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(paper, "section_list", lambda: _sections(calls, interrupt="b"))
    out = tmp_path / "run"
    line = one_line(invoke("reproduce", "--preset", "smoke", "--out", str(out), "--no-progress"), status=130)
    assert line == (f"interrupted by Ctrl-C: every file stored in {out}/ is whole (sections are written "
                    "atomically); rerun the same command to resume from the finished sections")
    assert _whole(out) == ["a.json"]
    stored_a = (out / "sections" / "a.json").read_bytes()
    monkeypatch.setattr(paper, "section_list", lambda: _sections(calls, interrupt=None))
    result = invoke("reproduce", "--preset", "smoke", "--out", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    assert calls == ["a", "b", "b"]  # the rerun resumed: only the interrupted section ran again
    assert (out / "sections" / "a.json").read_bytes() == stored_a


def test_ctrl_c_elsewhere_says_rerun_starts_again(monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(zoo, "trained", interrupted)
    line = one_line(invoke("train", "FC10(1e-4)"), status=130)
    assert line == ("interrupted by Ctrl-C: every file written so far is whole (files are written atomically); "
                    "rerun the same command to start again")


def test_sigterm_turned_into_a_plain_interrupt_by_a_library_still_says_sigterm(monkeypatch):
    """Ray's ``ray.wait`` catches the interrupt our SIGTERM handler raises and raises a plain
    KeyboardInterrupt of its own: found on a ``--workers 2`` run killed while waiting for units."""
    def waits_like_ray(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except KeyboardInterrupt:
            raise KeyboardInterrupt from None
    monkeypatch.setattr(zoo, "trained", waits_like_ray)
    line = one_line(invoke("train", "FC10(1e-4)"), status=cli.EXIT_SIGTERM)
    assert line.startswith("interrupted by SIGTERM: ")


# The child's made-up sections live in a module of their own: a section's code is hashed by module.
MADE_UP = textwrap.dedent("""
    import time
    from intriguing import runner
    def run(ctx, settings, results):
        if ctx.out.joinpath("sections", "a.json").exists():
            while True:
                time.sleep(0.01)  # section b: a long computation, until SIGTERM
        return {"value": 1}
    def section(key):
        return runner.Section(key=key, title=key, run=run, render=lambda result, ctx: "",
                              settings=runner.preset_settings(smoke={}, default={}, full={}))
    SECTIONS = [section("a"), section("b")]
""")
CHILD = textwrap.dedent("""
    import sys
    from intriguing import cli, paper
    if sys.argv[2] == "made-up":
        sys.path.insert(0, sys.argv[3])
        import made_up_sections
        paper.section_list = lambda: made_up_sections.SECTIONS
    print("started", file=sys.stderr, flush=True)  # imports done: the command's signal handling is next
    # --workers 1: in this process, no Ray cluster to start for a short test
    cli.main(["reproduce", "--preset", "smoke", "--out", sys.argv[1], "--no-progress", "--workers", sys.argv[4]])
""")


def _terminate(out: Path, mode: str, when, workers: int = 1) -> subprocess.CompletedProcess:
    """Run ``reproduce`` with ``workers`` in a child process, send SIGTERM once it started and ``when()``
    holds, return what it printed after starting."""
    (out.parent / "made_up_sections.py").write_text(MADE_UP)
    command = [sys.executable, "-c", CHILD, str(out), mode, str(out.parent), str(workers)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert child.stderr.readline() == "started\n"
    deadline = time.monotonic() + 120
    while not when() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    stdout, stderr = child.communicate(timeout=120)
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr)


@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=needs_ray)])
def test_sigterm_during_reproduce_leaves_whole_files_and_says_rerun_resumes(tmp_path, workers):
    # With 2 workers a local Ray instance runs, whose start-up installs a fatal-signal handler for
    # SIGTERM (a C++ stack dump, then abort): the clean interruption must survive it.
    out = tmp_path / "run"
    done = _terminate(out, "made-up", when=lambda: (out / "sections" / "a.json").exists(), workers=workers)
    assert done.returncode == cli.EXIT_SIGTERM, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        f"interrupted by SIGTERM: every file stored in {out}/ is whole (sections are written atomically); "
        "rerun the same command to resume from the finished sections"]
    assert _whole(out) == ["a.json"]


@pytest.mark.slow
def test_sigterm_during_a_real_smoke_run(tmp_path):
    """The real ``reproduce --preset smoke``, terminated about 3 s in (wherever that lands)."""
    out = tmp_path / "run"
    started_at: list[float] = []

    def three_seconds_in() -> bool:
        started_at[:] = started_at or [time.monotonic()]  # first asked right after the child started
        return time.monotonic() - started_at[0] > 3

    done = _terminate(out, "paper", when=three_seconds_in)
    assert done.returncode == cli.EXIT_SIGTERM, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("interrupted by SIGTERM: every file stored in")
    _whole(out)


# --- cases whose commands are being moved (pending) ----------------------------------------------

@pytest.fixture
def no_work(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")
    monkeypatch.setattr(zoo, "trained", refuse)


def test_attack_out_under_a_file_fails_before_any_work(tmp_path, no_work):
    """Item 8 (read-only folders cannot fail as root: a file stands in for one)."""
    (tmp_path / "file").write_text("x")
    line = one_line(invoke("attack", "FC10(1e-4)", "--n", "1", "--out", str(tmp_path / "file" / "a.json")))
    assert "is a file, not a folder" in line


def test_lipschitz_json_under_a_file_fails_before_any_work(tmp_path, no_work):
    (tmp_path / "file").write_text("x")
    line = one_line(invoke("lipschitz", "FC10(1e-4)", "--json", str(tmp_path / "file" / "l.json")))
    assert "is a file, not a folder" in line


def test_units_out_under_a_file_fails_before_any_work(tmp_path, no_work):
    """Item 9, units part."""
    (tmp_path / "file").write_text("x")
    line = one_line(invoke("units", "FC100-100-10", "--layer", "h1", "--out", str(tmp_path / "file" / "units")))
    assert "is a file, not a folder" in line


def test_lipschitz_on_a_missing_file_says_no_such_file(tmp_path):
    """Item 13."""
    line = one_line(invoke("lipschitz", str(tmp_path / "missing.safetensors")))
    assert "no such" in line.lower() and "unknown model" not in line


def test_attack_says_when_it_has_fewer_examples_than_asked(tmp_path):
    """Item 15: --n larger than the correctly classified examples is not silently capped."""
    import numpy as np

    from intriguing import checkpoint, data

    images, labels = data.load_mnist("test")
    np.savez(tmp_path / "few.npz", images=images[:30].numpy(), labels=labels[:30].numpy())
    checkpoint.save_model(zoo.build("FC10(1e-4)", seed=0), tmp_path / "random.safetensors")  # ~10% right
    done = invoke("attack", "FC10(1e-4)", "--weights", str(tmp_path / "random.safetensors"),
                  "--data", str(tmp_path / "few.npz"), "--n", "999999999")
    assert done.exit_code == 0 and "Traceback" not in done.output, done.output
    note = [line for line in done.output.splitlines() if line.startswith("note:")]
    assert len(note) == 1 and "--n 999999999 asks for more examples than the" in note[0]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where not even root can create files")
@pytest.mark.parametrize("option, path", [("--save", "/proc/intriguing-test"), ("--out", "/proc/intriguing-test.json")])
def test_attack_output_where_no_file_can_be_created_fails_before_any_work(option, path, no_work):
    """A bug: as root, os.access calls /proc writable, and the attack ended in a FileNotFoundError traceback."""
    line = one_line(invoke("attack", "FC10(1e-4)", "--n", "1", option, path))
    assert line.startswith("error: ") and "/proc" in line and "cannot create files" in line


def test_a_file_system_error_while_writing_is_one_line(tmp_path, monkeypatch):
    """Whatever the check could not foresee (a full disk, a folder removed meanwhile) still ends in one line."""
    from intriguing import records

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(records.os, "fsync", full)
    with pytest.raises(IntriguingError, match=r"cannot write .*r\.json: No space left on device"):
        records.write_json(tmp_path / "r.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []



def test_warnings_on_the_command_line_are_one_line_each(tmp_path):
    """A damaged stored section is recomputed with a warning; Python's format printed the source file, line
    and code of the warning call around it."""
    out = tmp_path / "run"
    assert invoke("reproduce", "--preset", "smoke", "--only", "table4", "--out", str(out), "--workers", "1",
                  "--no-progress").exit_code == 0
    (out / "sections" / "table4.json").write_text("garbage")
    done = invoke("reproduce", "--preset", "smoke", "--only", "table4", "--out", str(out), "--workers", "1",
                  "--no-progress")
    assert done.exit_code == 0, done.output
    warned = [line for line in done.output.splitlines() if "damaged" in line]
    assert warned == [f"warning: {out / 'sections' / 'table4.json'} is damaged (JSONDecodeError: Expecting value: "
                      "line 1 column 1 (char 0)); recomputing section 'table4'"]
    assert "UserWarning" not in done.output and "stored(ctx, s)" not in done.output

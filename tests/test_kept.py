"""Kept units of work (``ctx.map(..., keep=...)``): a run killed in the middle of a long section redoes only
the units in flight, and a resumed run gives the numbers of an uninterrupted one."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import pytest

from intriguing import records, runner
from intriguing.advtrain import Robustness, RunResult
from intriguing.runner import kept


class Killed(BaseException):
    """Stands for a kill (Ctrl-C, out of time)."""


@dataclass(frozen=True)
class Spec:
    seed: int


def made_up_run(spec: Spec) -> RunResult:
    """A unit whose result nests a dataclass and holds a NaN (an attack that failed everywhere)."""
    calls.append(spec.seed)
    if spec.seed in kill:
        raise Killed
    robustness = Robustness(examples=3, success_rate=0.0 if spec.seed == 2 else 1.0,
                            mean_distortion=math.nan if spec.seed == 2 else spec.seed / 7, median_distortion=0.1)
    return RunResult(variant="weight decay", seed=spec.seed, train_error=1 / 3, test_error=spec.seed / 10,
                     robustness=robustness, seconds=1.5, attack_seconds=0.5, generated=0, pool_success_rate=math.nan)


calls: list[int] = []
kill: set[int] = set()
REBUILD = functools.partial(records.from_jsonable, RunResult)


@pytest.fixture(autouse=True)
def fresh_calls():
    calls.clear()
    kill.clear()


def mapped(out, keep=REBUILD) -> list[RunResult]:
    ctx = runner.Context(preset="smoke", out=out, progress=False)
    return ctx.map(made_up_run, [Spec(s) for s in range(4)], "made-up runs", keep=keep)


def same(a: RunResult, b: RunResult) -> bool:
    """Equal, NaN equal to NaN."""
    return repr(a) == repr(b)


def test_a_killed_map_resumes_with_only_the_units_in_flight_and_the_same_results(tmp_path):
    kill.add(2)
    with pytest.raises(Killed):
        mapped(tmp_path / "run")
    assert calls == [0, 1, 2] and len(list((tmp_path / "run" / "units").iterdir())) == 2
    kill.clear()
    resumed = mapped(tmp_path / "run")
    assert calls == [0, 1, 2, 2, 3]
    fresh = mapped(tmp_path / "fresh")
    uninterrupted = [made_up_run(Spec(s)) for s in range(4)]
    assert all(same(r, f) and same(r, u) for r, f, u in zip(resumed, fresh, uninterrupted))
    assert isinstance(resumed[0].robustness, Robustness) and math.isnan(resumed[2].robustness.mean_distortion)


def test_without_keep_nothing_is_kept(tmp_path):
    mapped(tmp_path, keep=None)
    assert not (tmp_path / "units").exists()


def test_a_damaged_kept_unit_is_reported_and_recomputed(tmp_path):
    first = mapped(tmp_path)
    damaged = sorted((tmp_path / "units").iterdir())[0]
    damaged.write_text(damaged.read_text().replace("0.1", "0.2"))
    with pytest.warns(UserWarning, match="is damaged .*recomputing that unit"):
        again = mapped(tmp_path)
    assert len(calls) == 5 and all(same(a, b) for a, b in zip(first, again))


def test_a_changed_library_version_or_device_recomputes_every_unit(tmp_path, monkeypatch):
    mapped(tmp_path)
    monkeypatch.setattr(kept, "library_version", lambda: "edited-solver")
    mapped(tmp_path)
    assert calls == [0, 1, 2, 3] * 2
    assert kept.unit_key(made_up_run, Spec(0)) != kept.unit_key(made_up_run, Spec(0), device="cuda")
    assert kept.unit_key(made_up_run, Spec(0)) != kept.unit_key(made_up_run, Spec(1))

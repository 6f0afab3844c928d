"""Units of work and their backends: same numbers in-process and on Ray workers, stored shards
reused, a killed worker's unit run again with the same result.

The Ray tests start one local Ray instance of 2 CPUs for the module (about 15 s) and are skipped
when Ray is not installed.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from intriguing import records, zoo
from intriguing.attacks import LBFGSConfig
from intriguing.errors import IntriguingError
from intriguing.advtrain import AdvTrainConfig, AdvTrainStudyConfig
from intriguing.paper.sections import adversarial_training, lipschitz_gap, table1, table2, table3, table4, table5
from intriguing.paper.sections import units as units_section
from intriguing.paper.sections._transfer import TransferSettings
from intriguing.runner import Context, backends, work
from intriguing.runner.backends.inprocess import InProcess

TINY = TransferSettings(examples=12, limit=300, overrides={"epochs": 1, "batch_size": 32, "pretrain_epochs": 1},
                        error_examples=300, attack=LBFGSConfig.paper(max_solves=4, max_iter=30), shard_size=5)
TINY_UNITS = units_section.StudySettings(layers=(("FC100-100-10", "h1"),), seeds=(0, 1), directions=8,
                                         resamples=100, images=300, train_limit=300, train_overrides={"epochs": 1})
TABLES = (table1, table2, table3, table4)
TINY_STUDY = AdvTrainStudyConfig(seeds=(1,), layers=("h1",), baselines=False, limit=200, eval_examples=4,
                                 recipe={"epochs": 2, "lr": 1e-2, "batch_size": 64},
                                 eval_attack=LBFGSConfig.paper(max_solves=3, max_iter=20),
                                 training=AdvTrainConfig(warmup_epochs=1, pool_size=16, refresh_every=2))
# Every other section that runs units: small settings of each, by section.
OTHERS = {
    table5: table5.Table5Settings(alexnet=False, models=("FC10(1e-4)",), images=50, pairs=4, limit=300,
                                  overrides={"epochs": 1}, attack=LBFGSConfig.refined(max_solves=4, max_iter=30)),
    lipschitz_gap: lipschitz_gap.Settings(models=(lipschitz_gap.TINY,), images=50),
    adversarial_training: TINY_STUDY,
}


def shard_specs(cache: Path, examples: int = 12, size: int = 5) -> list[work.AttackShard]:
    model = work.TrainModel.of("FC10(1e-4)", limit=300, overrides={"epochs": 1}, cache=str(cache))
    attack = LBFGSConfig.paper(max_solves=4, max_iter=30)
    return [work.AttackShard(model, "test", examples, 3, start, stop, attack)
            for start, stop in work.shard_ranges(examples, size)]


def same_sets(a: list, b: list) -> bool:
    """Bitwise the same adversarial sets (NaN distortions of failed attacks equal)."""
    def plain(t: torch.Tensor) -> torch.Tensor:
        return t.nan_to_num(-1.0) if t.is_floating_point() else t

    return all(torch.equal(plain(getattr(x, name)), plain(getattr(y, name)))
               for x, y in zip(a, b, strict=True) for name in ("adversarial", "target", "success", "distortion"))


def tables(ctx: Context) -> str:
    """Tables 1-5, the units study, the Lipschitz gap and adversarial training computed on ``ctx.backend``,
    as the JSON a run stores (timings left out)."""
    results = {module.KEY: module.SECTION.run(ctx, TINY, {}) for module in TABLES}
    results["units"] = units_section.SECTION.run(ctx, TINY_UNITS, {})
    results |= {module.KEY: module.SECTION.run(ctx, settings, {}) for module, settings in OTHERS.items()}
    return json.dumps(without_timings(records.to_jsonable(results)), sort_keys=True)


def without_timings(document: Any) -> Any:
    """``document`` without the fields that measure time (they differ from run to run)."""
    if isinstance(document, dict):
        return {k: without_timings(v) for k, v in document.items() if "seconds" not in k and k != "environment"}
    if isinstance(document, list):
        return [without_timings(v) for v in document]
    return document


# --- without Ray --------------------------------------------------------------------------------------------


def test_shards_are_fixed_by_the_data_not_the_workers():
    assert work.shard_ranges(12, 5) == [(0, 5), (5, 10), (10, 12)]
    assert work.shard_ranges(1000) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    with pytest.raises(IntriguingError, match="shard size"):
        work.shard_ranges(10, 0)


def test_in_process_map_keeps_order_reports_each_result_and_restores_threads():
    seen = []
    torch.set_num_threads(2)
    try:
        results = InProcess(threads=1).map(lambda v: (v * v, torch.get_num_threads()), [3, 1, 2],
                                           on_result=lambda i, r: seen.append(i))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert results == [(9, 1), (1, 1), (4, 1)] and seen == [0, 1, 2]


def test_a_unit_may_wait_only_for_units_listed_before_it():
    """Units start in their order, so waiting for a later one could never end."""
    with pytest.raises(ValueError, match="listed before it"):
        InProcess().map(abs, [1, 2], after=[(1,), ()])
    with pytest.raises(ValueError, match="2 entries for 3 units"):
        InProcess().map(abs, [1, 2, 3], after=[(), ()])
    assert InProcess().map(abs, [-1, -2], after=[(), (0,)]) == [1, 2]


def timed_sleep(seconds: float) -> tuple[float, float]:
    """Sleeps; returns when it started and ended (this machine's monotonic clock, shared by its processes)."""
    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


def native_threads(_: object) -> list[int]:
    """The thread counts of the native pools (OpenBLAS, MKL, OpenMP) this process has loaded."""
    import numpy  # noqa: F401 - loads numpy's BLAS if nothing has yet
    import threadpoolctl
    return sorted({pool["num_threads"] for pool in threadpoolctl.threadpool_info()})


def test_a_unit_in_process_runs_its_native_thread_pools_at_its_thread_count_and_restores_them():
    """LipSDP's SCS eigendecompositions through OpenBLAS rounded differently with 2 BLAS threads (in
    process) than with 1 (Ray workers), so --workers 1 and 2 gave LipSDP bounds 1e-5 apart."""
    before = native_threads(None)
    assert InProcess(threads=1).map(native_threads, [0]) == [[1]]
    assert native_threads(None) == before


def test_one_worker_runs_in_process_and_bad_worker_counts_are_refused(monkeypatch):
    assert isinstance(backends.create(1), InProcess)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(IntriguingError, match="workers"):
            backends.create(bad)
    monkeypatch.setenv(backends.WORKERS_ENV, "3")
    assert backends.default_workers() == 3
    monkeypatch.setenv(backends.WORKERS_ENV, "many")
    with pytest.raises(IntriguingError, match=backends.WORKERS_ENV):
        backends.default_workers()
    monkeypatch.delenv(backends.WORKERS_ENV)
    monkeypatch.setattr(backends, "ray_installed", lambda: False)
    assert backends.default_workers() == 1
    with pytest.raises(IntriguingError, match=r"intriguing\[ray\]"):
        backends.create(2)


def test_a_context_runs_its_units_in_process_by_default(tmp_path):
    assert isinstance(Context(preset="smoke", out=tmp_path).backend, InProcess)


def test_stored_shards_are_skipped_and_a_damaged_one_is_recomputed(tmp_path, isolated_cache):
    specs = shard_specs(isolated_cache)
    paths = [tmp_path / f"{s.start}.safetensors" for s in specs]
    first = work.attack_stored(InProcess(), specs, paths)
    assert all(p.is_file() for p in paths)
    counted = []
    again = work.attack_stored(InProcess(), specs, paths, on_done=counted.append)
    assert same_sets(first, again) and counted == []  # nothing recomputed
    paths[1].write_bytes(paths[1].read_bytes()[:-50])  # a disk that filled up
    with pytest.warns(UserWarning, match="recomputing the attack"):
        repaired = work.attack_stored(InProcess(), specs, paths, on_done=counted.append)
    assert counted == [3] and same_sets(first, repaired)
    joined = work.joined(first)
    assert len(joined) == 12 and joined.config == first[0].config


def test_models_go_to_the_workers_longest_first(isolated_cache):
    """With 2 workers the default preset's last model (FC200-200-10, ~90 s) trained alone at the end while the
    other worker idled for 74 s: models are now handed out longest first (LPT), by a relative cost guess."""
    names = ("FC10(1e-4)", "FC200-200-10", "FC100-100-10", "ConvNet")
    specs = [work.TrainModel.of(name, cache=str(isolated_cache)) for name in names]
    halved = work.TrainModel.of("FC100-100-10", on="P1", cache=str(isolated_cache))
    assert work.longest_first([*specs, halved]) == [3, 1, 2, 4, 0]

    def cost(spec: work.TrainModel) -> float:
        return zoo.training_cost(spec.config)

    assert cost(halved) == pytest.approx(cost(specs[2]) / 2)
    limited = work.TrainModel.of("FC100-100-10", limit=600, overrides={"epochs": 1}, cache=str(isolated_cache))
    assert cost(limited) == pytest.approx(cost(specs[2]) / 100 / 60)

    handed = []

    class Recording(InProcess):
        def map(self, function, specs, *, on_result=None):
            handed.extend(spec.name for spec in specs)
            return []

    work.train_missing(Recording(), specs)
    assert handed == ["ConvNet", "FC200-200-10", "FC100-100-10", "FC10(1e-4)"]


def test_an_adversarial_training_unit_is_one_run_of_the_study():
    from intriguing.advtrain import run_experiment

    whole = run_experiment(TINY_STUDY, progress=False).runs
    units = InProcess().map(work.adv_train_run, [work.AdvTrainRun(TINY_STUDY, r.variant, r.seed) for r in whole])
    ignore = {"seconds", "attack_seconds"}
    assert [{k: v for k, v in records.to_jsonable(r).items() if k not in ignore} for r in units] == \
        [{k: v for k, v in records.to_jsonable(r).items() if k not in ignore} for r in whole]


# --- on a local Ray instance --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_workers():
    """A local Ray instance with 2 worker CPUs for this module; this test module's helpers travel by value."""
    ray = pytest.importorskip("ray")
    from intriguing.runner.backends.ray import RayBackend

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 2**20, logging_level=logging.WARNING)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        yield RayBackend(workers=2)
    finally:
        ray.shutdown()


def test_ray_and_in_process_give_bitwise_identical_numbers_in_every_section_with_units(tmp_path, ray_workers):
    here = tables(Context(preset="smoke", out=tmp_path / "a", cache=str(tmp_path / "cache-a"), progress=False))
    there = tables(Context(preset="smoke", out=tmp_path / "b", cache=str(tmp_path / "cache-b"), progress=False,
                           backend=ray_workers))
    assert here == there
    artifacts = tmp_path / "b" / "artifacts"
    assert len(list(artifacts.glob("adversarial-*.safetensors"))) == 9  # 3 shards each, joined
    assert not list((artifacts / "shards").rglob("*.safetensors"))


def test_a_unit_on_ray_starts_only_after_the_units_it_waits_for(ray_workers):
    """Units run ahead load models other units train: with a free worker, unit 2 would start as soon as
    unit 1 ends, but it waits for unit 0."""
    (_, slow_end), _, (waiting_start, _) = ray_workers.map(timed_sleep, [1.0, 0.1, 0.0], after=[(), (), (0,)])
    assert waiting_start >= slow_end


def test_a_unit_on_ray_runs_its_native_thread_pools_at_its_thread_count(ray_workers):
    assert ray_workers.map(native_threads, [0, 1]) == [[1], [1]]


def test_a_ray_run_prints_its_one_summary_line_and_nothing_else(tmp_path):
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"} | {"HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", "from intriguing.cli import main; main()", "reproduce", "--preset",
                           "smoke", "--only", "deviations", "--workers", "2", "--no-progress",
                           "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "" and len(done.stdout.strip().splitlines()) == 1


def test_a_refused_ray_token_is_one_clear_line_not_a_traceback(monkeypatch):
    ray = pytest.importorskip("ray")
    from intriguing.runner.backends.ray import RayBackend

    def refuse(**_):
        raise ray.exceptions.AuthenticationError("InvalidAuthToken: Authentication token is missing or incorrect.\n"
                                                 "Ensure that the token for the cluster is available.")

    monkeypatch.setattr(ray, "init", refuse)
    with socket.create_server(("127.0.0.1", 0)) as head:  # something answers at the address
        address = f"127.0.0.1:{head.getsockname()[1]}"
        with pytest.raises(IntriguingError, match=f"cannot join the Ray cluster at {address}: InvalidAuthToken.*"
                                                  "auth_token") as error:
            RayBackend._start(2, address, None)
    assert "\n" not in str(error.value)


def test_an_address_where_nothing_answers_is_one_clear_line_at_once(monkeypatch):
    """A bug: ray.init retried an unreachable head for minutes, printing C++ warnings, before failing."""
    ray = pytest.importorskip("ray")
    from intriguing.runner.backends.ray import RayBackend

    def hang(**_):
        raise AssertionError("ray.init was called for an address where nothing answers")

    monkeypatch.setattr(ray, "init", hang)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        address = f"127.0.0.1:{closed.getsockname()[1]}"  # free once closed: the connection is refused
    with pytest.raises(IntriguingError, match=f"cannot join the Ray cluster at {address}: nothing answers there "
                                              r"\(.*\); start the head node with 'ray start --head'"):
        RayBackend._start(2, address, None)
    with pytest.raises(IntriguingError, match="expected HOST:PORT"):
        RayBackend._start(2, "head", None)


def killed_once(spec: work.AttackShard, folder: str) -> object:
    """The first try of shard 0 writes its worker's pid and waits to be killed; every other try attacks."""
    if spec.start == 0:
        try:
            claim = os.open(Path(folder) / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass
        else:
            os.close(claim)
            records.write_bytes(Path(folder) / "pid", str(os.getpid()).encode())
            time.sleep(300)
    return work.attack_shard(spec)


def kill_when_written(pid_file: Path, killed: list[int]) -> None:
    for _ in range(1200):
        if pid_file.is_file():
            killed.append(int(pid_file.read_text()))
            os.kill(killed[0], signal.SIGKILL)
            return
        time.sleep(0.05)


def test_a_worker_killed_mid_attack_is_replaced_and_the_numbers_do_not_change(tmp_path, isolated_cache,
                                                                              ray_workers):
    specs = shard_specs(isolated_cache, examples=15)
    uninterrupted = InProcess().map(work.attack_shard, specs)
    killed: list[int] = []
    killer = threading.Thread(target=kill_when_written, args=(tmp_path / "pid", killed))
    killer.start()
    survived = ray_workers.map(functools.partial(killed_once, folder=str(tmp_path)), specs)
    killer.join()
    assert killed and killed[0] != os.getpid()
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)  # that worker is gone; Ray ran its shard again elsewhere
    assert same_sets(uninterrupted, survived)

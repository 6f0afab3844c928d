"""Shared fixtures. Every test run gets its own checkpoint cache, so no test reads or writes ~/.cache."""

from __future__ import annotations

import os

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point INTRIGUING_CACHE at a fresh folder shared by the whole session (tiny models train once)."""
    path = tmp_path_factory.mktemp("intriguing-cache")
    old = os.environ.get("INTRIGUING_CACHE")
    os.environ["INTRIGUING_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("INTRIGUING_CACHE", None)
    else:
        os.environ["INTRIGUING_CACHE"] = old


@pytest.fixture(scope="session", autouse=True)
def in_process_workers():
    """Runs stay in-process unless a test asks for Ray: starting a local cluster costs ~20 s per run."""
    old = os.environ.get("INTRIGUING_WORKERS")
    os.environ["INTRIGUING_WORKERS"] = "1"
    yield
    if old is None:
        os.environ.pop("INTRIGUING_WORKERS", None)
    else:
        os.environ["INTRIGUING_WORKERS"] = old


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tests use tiny models, where one intra-op thread is faster than two and never oversubscribes."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def deterministic_torch():
    torch.manual_seed(0)

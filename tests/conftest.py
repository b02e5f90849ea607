"""Shared fixtures (helpers live in ``tests/helpers``): the real Hydra config with outputs in a temp directory."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

# One thread per process, set before torch is first imported so that the training processes the
# tests start inherit it: `make test` runs two pytest workers on two cores, and torch's OpenMP
# threads of two processes spinning against each other would make both several times slower.
os.environ["OMP_NUM_THREADS"] = "1"

import pytest  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from minituner.store.artifacts import exclusive_lock  # noqa: E402
from tests.helpers import QUICK, compose_config, start_train  # noqa: E402


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str) -> DictConfig:
        return compose_config(list(overrides), tmp_path)

    return make


def _session_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of this test session: shared by the pytest-xdist workers of one run, never between runs."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def parallel_finetunes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two quick ``regime=full`` fine-tunes of ``model=tiny`` started together on a fresh machine, once per session.

    They need the same missing base: one builds it with the shipped recipe, the other waits on
    the lock and loads it. ``test_train_e2e`` checks exactly that; every test that needs the tiny
    base without testing its build copies this session's cache (:func:`seed_tiny_base`). The
    first xdist worker to ask runs them, the other waits and reuses them. Returns the directory
    holding the runs ``first`` and ``second`` and ``outputs/bases``.
    """
    root = _session_root(tmp_path_factory) / "parallel-finetunes"
    with exclusive_lock(root.with_name(".parallel-finetunes.lock")):
        if not (root / "outputs" / "bases").is_dir():
            runs = [start_train(root, name, "regime=full", *QUICK) for name in ("first", "second")]
            for process in runs:
                _, stderr = process.communicate(timeout=300)
                assert process.returncode == 0, stderr[-2000:]
    return root


@pytest.fixture
def seed_tiny_base(parallel_finetunes: Path) -> Callable[[Path], Path]:
    """Copy the session's tiny base into ``<outputs dir>/bases`` for tests that need it but do not test its build."""

    def seed(outputs_dir: Path) -> Path:
        cache = parallel_finetunes / "outputs" / "bases"
        shutil.copytree(cache, outputs_dir / "bases", ignore=shutil.ignore_patterns(".*.lock"))  # not the lock
        return outputs_dir / "bases"

    return seed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: under pytest-xdist they then run beside the others instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

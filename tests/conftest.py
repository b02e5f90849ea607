"""Shared fixtures (helpers live in ``helpers.py``): the real Hydra config with outputs in a temp directory."""

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
from helpers import QUICK, compose_config  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from minituner.store.artifacts import exclusive_lock  # noqa: E402
from minituner.training.pipeline import prepare_model  # noqa: E402


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
def tiny_base_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base cache with the ``model=tiny`` base that quick fine-tunes need, pretrained once per session.

    Built in-process with the shipped recipe, exactly as a fine-tune would build it; the first
    xdist worker to ask builds it, the others wait on the lock and reuse it.
    """
    root = _session_root(tmp_path_factory) / "tiny-base"
    with exclusive_lock(root.with_name(".tiny-base.lock")):
        if not (root / "outputs" / "bases").is_dir():
            prepare_model(compose_config(QUICK, root))
    return root / "outputs" / "bases"


@pytest.fixture
def seed_tiny_base(tiny_base_cache: Path) -> Callable[[Path], Path]:
    """Copy the session's tiny base into ``<outputs dir>/bases`` for tests that need it but do not test its build."""

    def seed(outputs_dir: Path) -> Path:
        shutil.copytree(tiny_base_cache, outputs_dir / "bases", ignore=shutil.ignore_patterns(".*"))
        return outputs_dir / "bases"

    return seed


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first: under pytest-xdist they then run beside the others instead of ending the run alone."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)

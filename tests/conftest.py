"""Shared fixtures (helpers live in ``helpers.py``): the real Hydra config with outputs in a temp directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import compose_config
from omegaconf import DictConfig


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str) -> DictConfig:
        return compose_config(list(overrides), tmp_path)

    return make

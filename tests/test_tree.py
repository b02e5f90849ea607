"""The package tree keeps its shape: public APIs resolve, apps stay apart, identities ignore import paths."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from minituner.store.base_cache import base_key
from minituner.store.resume import resumable_config

PACKAGE = Path(__file__).resolve().parents[1] / "minituner"
CALLBACKS = PACKAGE.parent / "callbacks"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_the_rooms_are_the_ones_the_readme_names():
    assert SUBPACKAGES == [
        "apps", "config", "data", "generation", "lora", "memory", "model", "quant", "reports", "store", "training"
    ]  # fmt: skip
    for name in SUBPACKAGES:  # each says in its docstring what it holds
        assert importlib.import_module(f"minituner.{name}").__doc__.strip()


@pytest.mark.parametrize("name", [n for n in SUBPACKAGES if n != "apps"])
def test_every_public_name_of_a_subpackage_resolves(name):
    package = importlib.import_module(f"minituner.{name}")
    assert package.__all__
    for public in package.__all__:
        assert getattr(package, public) is not None
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        package.nope  # noqa: B018


def test_no_library_module_imports_an_app_and_apps_import_no_other_app():
    library = [p for p in [*PACKAGE.rglob("*.py"), *CALLBACKS.glob("*.py")] if "apps" not in p.parts]
    for path in library:
        assert not any(m.startswith("minituner.apps") for m in imported_modules(path)), path
    for path in (PACKAGE / "apps").glob("*.py"):
        others = {m for m in imported_modules(path) if m.startswith("minituner.apps")} - {"minituner.apps.runner"}
        assert not others, (path, others)


def test_no_module_is_over_400_lines():
    for path in [*PACKAGE.rglob("*.py"), *CALLBACKS.glob("*.py")]:
        assert len(path.read_text().splitlines()) <= 400, path


def moved(cfg, module: str, name: str = "warmup_cosine"):
    """The same config with the scheduler's function imported from another module (or another function)."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.regime.scheduler._target_ = f"{module}.{name}"
    return cfg


def test_the_base_key_hashes_what_a_recipe_computes_not_where_its_code_lives(make_cfg):
    pretrain = make_cfg("regime=pretrain")
    assert base_key(moved(pretrain, "somewhere.else")) == base_key(pretrain)
    assert base_key(moved(pretrain, "minituner.training.schedules", "constant")) != base_key(pretrain)
    finetune = make_cfg()  # the base of a fine-tune: the shipped recipe, also path-free
    assert base_key(finetune) == base_key(pretrain)


def test_the_resume_check_ignores_import_paths_but_not_functions(make_cfg):
    cfg = make_cfg()
    assert resumable_config(moved(cfg, "somewhere.else")) == resumable_config(cfg)
    assert resumable_config(moved(cfg, "x", "constant")) != resumable_config(cfg)
    assert OmegaConf.select(cfg, "regime.scheduler._target_") == "minituner.training.schedules.warmup_cosine"

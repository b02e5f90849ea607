"""The package tree keeps its shape: public APIs resolve, apps stay apart, identities ignore import paths."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf, open_dict

from minituner.config.base_request import base_identity
from minituner.config.identity import resumable_config

PACKAGE = Path(__file__).resolve().parents[1] / "minituner"
CALLBACKS = PACKAGE.parent / "callbacks"
SUBPACKAGES = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
# The declared layers, lowest first: a subpackage imports only subpackages before it.
LAYERS = [
    "model",
    "quant",
    "store",
    "lora",
    "data",
    "memory",
    "generation",
    "config",
    "callbacks",
    "training",
    "reports",
    "apps",
]
# The layers below the configuration: they take plain, typed values, never the Hydra config.
CONFIG_FREE = ["model", "quant", "store", "lora", "data", "memory", "generation"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def module_name(path: Path, roots: dict[str, Path]) -> str:
    """The dotted name of the module at ``path`` under one of ``roots`` (package name -> its directory)."""
    for package, directory in roots.items():
        if path.is_relative_to(directory):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise ValueError(path)


def import_targets(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in it (inside functions too), relative imports resolved."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = package[: len(package) - node.level + 1]
                targets.add(".".join([*base, node.module] if node.module else base))
            else:
                targets.add(node.module)
    return targets


def subpackage_graph(top: str, roots: dict[str, Path]) -> dict[str, set[str]]:
    """Which subpackages of ``top`` each one imports (its own excluded), from the source alone."""
    graph: dict[str, set[str]] = {}
    for directory in roots.values():
        for path in directory.rglob("*.py"):
            module = module_name(path, roots)
            source = module.split(".")
            if len(source) < 2:
                continue
            for target in import_targets(path, module):
                parts = target.split(".")
                if parts[0] == top and len(parts) > 1 and parts[1] != source[1]:
                    graph.setdefault(source[1], set()).add(parts[1])
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the nodes along it (first = last), or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return path[path.index(node) :] + [node]
        if node in done:
            return None
        for nxt in sorted(graph.get(node, ())):
            if cycle := visit(nxt, [*path, node]):
                return cycle
        done.add(node)
        return None

    return next((c for node in sorted(graph) if (c := visit(node, []))), None)


def against_layers(graph: dict[str, set[str]], layers: list[str]) -> list[str]:
    """The edges that import a subpackage at the same or a higher layer (or one the order does not name)."""
    rank = {name: i for i, name in enumerate(layers)}
    return sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if rank.get(b, len(layers)) >= rank.get(a, -1)
    )


MINITUNER_ROOTS = {"minituner": PACKAGE, "minituner.callbacks": CALLBACKS}


def test_subpackages_import_each_other_one_way_in_the_declared_layer_order():
    graph = subpackage_graph("minituner", MINITUNER_ROOTS)
    assert set(graph) | {b for targets in graph.values() for b in targets} <= set(LAYERS)
    assert find_cycle(graph) is None
    assert against_layers(graph, LAYERS) == []


def test_the_cycle_check_finds_a_planted_cycle_and_the_layer_check_the_wrong_way_import(tmp_path):
    root = tmp_path / "pkg"
    for sub, source in {
        "low": "def helper():\n    from pkg.high.top import value  # a late import still counts\n",
        "high": "from ..low.bottom import helper\n",
        "side": "import pkg.low.bottom\n",
    }.items():
        (root / sub).mkdir(parents=True)
        (root / sub / "__init__.py").write_text("")
        (root / sub / ("bottom.py" if sub == "low" else "top.py")).write_text(source)
    graph = subpackage_graph("pkg", {"pkg": root})
    assert graph == {"low": {"high"}, "high": {"low"}, "side": {"low"}}
    assert find_cycle(graph) == ["high", "low", "high"]
    assert against_layers(graph, ["low", "high", "side"]) == ["low -> high"]
    del graph["low"]
    assert find_cycle(graph) is None


def test_the_layers_below_the_config_never_import_omegaconf_or_hydra():
    for name in CONFIG_FREE:
        for path in (PACKAGE / name).rglob("*.py"):
            imported = import_targets(path, module_name(path, MINITUNER_ROOTS))
            assert not {m for m in imported if m.split(".")[0] in ("omegaconf", "hydra")}, path


def test_the_rooms_are_the_ones_the_readme_names():
    assert SUBPACKAGES == [
        "apps",
        "config",
        "data",
        "generation",
        "lora",
        "memory",
        "model",
        "quant",
        "reports",
        "store",
        "training",
    ]
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


def test_no_function_is_over_60_lines():
    for path in [*PACKAGE.rglob("*.py"), *CALLBACKS.glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno - node.lineno < 60, f"{path}:{node.lineno} {node.name}"


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
    assert base_identity(moved(pretrain, "somewhere.else")).key() == base_identity(pretrain).key()
    assert (
        base_identity(moved(pretrain, "minituner.training.schedules", "constant")).key()
        != base_identity(pretrain).key()
    )
    finetune = make_cfg()  # the base of a fine-tune: the shipped recipe, also path-free
    assert base_identity(finetune).key() == base_identity(pretrain).key()


def test_the_resume_check_ignores_import_paths_but_not_functions(make_cfg):
    cfg = make_cfg()
    assert resumable_config(moved(cfg, "somewhere.else")) == resumable_config(cfg)
    assert resumable_config(moved(cfg, "x", "constant")) != resumable_config(cfg)
    assert OmegaConf.select(cfg, "regime.scheduler._target_") == "minituner.training.schedules.warmup_cosine"

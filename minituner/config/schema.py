"""Unknown keys: a key added with ``+key=value`` that nothing reads is a typo, not a setting.

Hydra refuses to *set* a key that does not exist, but ``+key=value`` (or an experiment file)
can *add* one, and a misspelt ``+lora.rank=4`` would then be ignored in silence. The schema
here is what minituner reads: every key some shipped config file defines and, for nodes
that build an object (``_target_``), the parameters of that object's constructor.
"""

from __future__ import annotations

import difflib
import inspect
from functools import cache

import yaml
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from minituner.config.shipped import CONF_DIR
from minituner.data.datamodules import VerbDataModule

SKIPPED_TOP_LEVEL = ("defaults", "hydra")
HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def _paths(node: object, prefix: str) -> set[str]:
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        found.add(f"{prefix}{key}")
        found |= _paths(value, f"{prefix}{key}.")
    return found


@cache
def shipped_keys() -> frozenset[str]:
    """Dotted paths of every key in the shipped config files, placed at their package."""
    keys: set[str] = set()
    for path in CONF_DIR.rglob("*.yaml"):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group == "hydra":
            continue
        text = path.read_text(encoding="utf-8")
        content = yaml.safe_load(text) or {}
        content = {k: v for k, v in content.items() if k not in SKIPPED_TOP_LEVEL}
        if group == "." or text.startswith("# @package _global_"):
            keys |= _paths(content, "")
            continue
        package = group.split("/")
        keys |= {".".join(package[: i + 1]) for i in range(len(package))}  # the group's own node
        keys |= _paths(content, ".".join(package) + ".")
    return frozenset(keys)


def _constructor_parameters(target: str) -> set[str] | None:
    """Named parameters of what ``_target_`` builds; None when it takes any keyword."""
    try:
        parameters = inspect.signature(get_object(target)).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return None  # an unknown target is instantiate's to report
    names = {p.name for p in parameters if p.kind is not p.VAR_KEYWORD}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        if not target.startswith("minituner.") or not target.endswith("_datamodule"):
            return None
        names |= set(inspect.signature(VerbDataModule).parameters)  # our factories forward the rest there
    return names


def unknown_key_problems(cfg: DictConfig) -> list[str]:
    """One line per key of ``cfg`` that neither a shipped config nor a constructor knows."""
    known = shipped_keys()
    problems: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        target = node.get("_target_")
        parameters = _constructor_parameters(target) if isinstance(target, str) else set()
        for key, value in node.items():
            path = f"{prefix}{key}"
            if path.startswith(SKIPPED_TOP_LEVEL) or key in HYDRA_KEYS:
                continue
            builds_object = isinstance(value, dict) and "_target_" in value  # e.g. a callback of one's own
            if parameters is None or path in known or key in parameters or builds_object:
                if isinstance(value, dict):
                    walk(value, f"{path}.")
                continue
            siblings = sorted(
                {k.removeprefix(prefix) for k in known if k.startswith(prefix) and "." not in k.removeprefix(prefix)}
                | (parameters or set())
            )
            close = difflib.get_close_matches(str(key), siblings, n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            found = "a node" if isinstance(value, dict) else repr(value)
            problems.append(f"{path} ({found}) is not a known key: nothing reads it{hint}; allowed here: {siblings}")

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return problems

"""The value checks every config node uses, so that one kind of problem always reads the same."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf


def is_integer(value: object) -> bool:
    """An int that is not a bool (YAML's ``true`` is an int to Python)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or a float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def integer_problems(
    cfg: DictConfig, key: str, minimum: int = 1, allow_null: bool = False, allow_minus_one: bool = False
) -> list[str]:
    """``[problem]`` when ``cfg``'s ``key`` is not an integer >= ``minimum`` (or an allowed null / -1), else []."""
    value = OmegaConf.select(cfg, key)
    if (value is None and allow_null) or (is_integer(value) and (value >= minimum or allow_minus_one and value == -1)):
        return []
    allowed = {1: "a positive integer", 0: "a non-negative integer"}.get(minimum, f"an integer >= {minimum}")
    allowed += " or -1 (unlimited)" * allow_minus_one + " or null" * allow_null
    return [f"{key}={value!r} is not allowed: must be {allowed}"]

"""The error every configuration check raises (its own module so that any layer can raise it)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A composed config that cannot run; ``problems`` lists every issue found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")

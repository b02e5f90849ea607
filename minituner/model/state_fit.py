"""Whether a set of named tensors fits a model: the one check every loader of weights runs before it copies."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def fit_problems(expected: Mapping[str, Iterable[int]], found: Mapping[str, Iterable[int]]) -> list[str]:
    """Why tensors of the names and shapes ``found`` do not fit a model expecting ``expected``; [] when they do.

    One entry per kind of mismatch, each listing every name: ``missing [...]``, ``unexpected
    (would be left unapplied) [...]``, ``wrong shapes (found vs model) [...]``.
    """
    expected = {k: tuple(v) for k, v in expected.items()}
    found = {k: tuple(v) for k, v in found.items()}
    problems = []
    if missing := sorted(expected.keys() - found.keys()):
        problems.append(f"missing {missing}")
    if unexpected := sorted(found.keys() - expected.keys()):
        problems.append(f"unexpected (would be left unapplied) {unexpected}")
    wrong = [
        f"{k}: {found[k]} vs {expected[k]}" for k in sorted(expected.keys() & found.keys()) if found[k] != expected[k]
    ]
    if wrong:
        problems.append(f"wrong shapes (found vs model) {wrong}")
    return problems

"""Which directories are minituner's, and which of them a writer may replace.

Every directory minituner writes as a whole (a base, a fine-tuned or merged model, an adapter,
a training checkpoint) carries a marker, ``.minituner-artifact.json``, that names its kind and
the files minituner wrote into it. A writer replaces an existing directory only when it is
minituner's artifact of the same kind and holds nothing else; anything else is refused before
any work, with an :class:`OwnershipError` that names the path, what was found there and what
to do. A directory without a marker is recognised by its exact file set, fixed by the kind's format.
"""

from __future__ import annotations

import json
from pathlib import Path

MARKER_FILE = ".minituner-artifact.json"
MARKER_FORMAT = "minituner-artifact/1"
KINDS = {
    "base": "a pretrained base",
    "model": "a fine-tuned model",
    "merged": "a merged model",
    "adapter": "a LoRA adapter",
    "checkpoint": "a training checkpoint",
}
# The exact file set of each kind without a marker (the writers' file names, fixed by their formats).
_BASE_FORMAT_FILES = frozenset({"model.safetensors", "config.json", "tokenizer.json"})
_UNMARKED_FILE_SETS = {
    frozenset({"adapter_config.json", "adapter_model.safetensors"}): "adapter",
    frozenset({"state.json", "tensors.safetensors"}): "checkpoint",
}
# A base-format directory's config.json says which of the three kinds it is.
_BASE_FORMAT_KEYS = (("merged_from", "merged"), ("finetuned_from", "model"))


class OwnershipError(ValueError):
    """A path minituner will not write over; the message names it, what is there and what to do."""


def marker(kind: str, files: list[str]) -> dict:
    """The marker content of a ``kind`` artifact holding ``files``."""
    if kind not in KINDS:
        raise ValueError(f"unknown artifact kind {kind!r}: one of {sorted(KINDS)}")
    return {"format": MARKER_FORMAT, "kind": kind, "files": sorted(files)}


def _read_marker(directory: Path) -> dict | None:
    try:
        content = json.loads((directory / MARKER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(content, dict) and content.get("format") == MARKER_FORMAT and content.get("kind") in KINDS
    ok = ok and isinstance(content.get("files"), list) and all(isinstance(f, str) for f in content["files"])
    return content if ok else None


def _kind_by_file_set(directory: Path, names: set[str]) -> str | None:
    if frozenset(names) in _UNMARKED_FILE_SETS:
        return _UNMARKED_FILE_SETS[frozenset(names)]
    if names != _BASE_FORMAT_FILES:
        return None
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or "weights_sha256" not in config:
        return None
    return next((kind for key, kind in _BASE_FORMAT_KEYS if key in config), "base")


def owned_files(directory: Path) -> tuple[str | None, set[str]]:
    """The artifact kind of ``directory`` (None: not minituner's) and the names of the files minituner wrote there."""
    directory = Path(directory)
    if not directory.is_dir() or directory.is_symlink():
        return None, set()
    names = {p.name for p in directory.iterdir()}
    content = _read_marker(directory)
    if content is not None:
        return content["kind"], set(content["files"]) | {MARKER_FILE}
    kind = _kind_by_file_set(directory, names)
    return kind, (names if kind else set())


def artifact_kind(directory: Path) -> str | None:
    """``base``, ``model``, ``merged``, ``adapter`` or ``checkpoint`` when ``directory`` is minituner's; else None."""
    return owned_files(directory)[0]


def listing(names: list[str] | set[str], limit: int = 5) -> str:
    """``a, b, c, ... (N in all)``: the first ``limit`` names, sorted, for error messages."""
    shown = ", ".join(sorted(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _found(kind: str | None, foreign: list[str]) -> str:
    if kind is None:
        return f"is not minituner's (it holds {listing(foreign)})"
    found = f"is minituner's {kind} ({KINDS[kind]})"
    return found + (f" but also holds files minituner did not write ({listing(foreign)})" if foreign else "")


def check_writable(directory: Path, kind: str, overwrite: bool = False) -> None:
    """Refuse, before any work, to write a ``kind`` artifact where it would replace what is not minituner's.

    Allowed: a missing path (its parents are created), an empty directory, minituner's own
    artifact of the same kind holding only the files it wrote. With ``overwrite`` also a
    directory that holds other files, or none of minituner's (the new files are written into it
    and the others are kept): never files of another kind of artifact, never a file in the way.

    Raises:
        OwnershipError: Naming the path, what was found there and what to do instead.
    """
    directory = Path(directory)
    for ancestor in (directory, *directory.parents):
        if ancestor.exists() or ancestor.is_symlink():
            break
    else:
        return
    if ancestor != directory:
        if not ancestor.is_dir():
            raise OwnershipError(f"cannot write {KINDS[kind]} to {directory}: {ancestor} is a file, not a directory")
        return
    if directory.is_symlink() or not directory.is_dir():
        what = "a symbolic link" if directory.is_symlink() else "a file"
        raise OwnershipError(f"refusing to write {KINDS[kind]} to {directory}: {what} is there; choose another path")
    names = [p.name for p in directory.iterdir()]
    if not names:
        return
    found, ours = owned_files(directory)
    foreign = sorted(set(names) - ours)
    if found == kind and not foreign:
        return
    if overwrite and found in (None, kind):
        return
    advice = "choose a new or empty directory"
    if found in (None, kind):
        advice += " (or overwrite, e.g. minituner-merge --overwrite, which writes into it and keeps the other files)"
    raise OwnershipError(
        f"refusing to write {KINDS[kind]} to {directory}: it {_found(found, foreign)}, and minituner replaces only "
        f"its own {kind} directories: {advice}"
    )

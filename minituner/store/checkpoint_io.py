"""Training checkpoints as safetensors + JSON: no pickle, written atomically, checked on load.

A Lightning checkpoint is a nested dict of tensors and plain values (loop counters, optimizer
state keyed by parameter index, RNG states...). It is stored as a directory (Lightning writes
it through ``minituner.training.checkpoint_plugin.SafeCheckpointIO``):

* ``tensors.safetensors``: every tensor of the dict, under the names ``t0``, ``t1``...
* ``state.json``: the dict's structure with each tensor replaced by ``{"__tensor__": "tN"}``
  (tuples and dicts with non-string keys get markers of their own), plus the SHA-256 of
  the tensors file, so a torn or corrupt checkpoint is recognised before anything is restored.

Anything else (an object that would need pickle) is refused when saving, naming its key.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minituner.store.artifacts import (
    open_artifact,
    readable_directory,
    sha256_file,
    write_directory_atomic,
    write_text_atomic,
)

log = logging.getLogger(__name__)

FORMAT = "minituner-checkpoint/1"
STATE_FILE = "state.json"
TENSORS_FILE = "tensors.safetensors"
PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the path and what is wrong."""


def encode(value: Any, tensors: dict[str, torch.Tensor], key: str = "checkpoint") -> Any:
    """``value`` as JSON-ready data, its tensors moved into ``tensors`` (``key`` names it in errors)."""
    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().to("cpu", copy=True).contiguous()  # a copy: no storage is shared
        return {"__tensor__": name}
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, tensors, f"{key}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [encode(v, tensors, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: encode(v, tensors, f"{key}.{k}") for k, v in value.items()}
        if all(isinstance(k, PLAIN) for k in value):
            return {"__items__": [[k, encode(v, tensors, f"{key}.{k}")] for k, v in value.items()]}
    raise TypeError(
        f"{key} holds a {type(value).__name__}: checkpoints hold only tensors and plain Python values "
        "(str, int, float, bool, None, lists, tuples, dicts)"
    )


def decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if set(value) == {"__tensor__"}:
        return tensors[value["__tensor__"]]
    if set(value) == {"__tuple__"}:
        return tuple(decode(v, tensors) for v in value["__tuple__"])
    if set(value) == {"__items__"}:
        return {k: decode(v, tensors) for k, v in value["__items__"]}
    return {k: decode(v, tensors) for k, v in value.items()}


def save_checkpoint_dir(checkpoint: dict, directory: Path) -> None:
    """Write ``checkpoint`` as ``directory`` (atomically: the previous one or the new one survives)."""
    tensors: dict[str, torch.Tensor] = {}
    tree = encode(checkpoint, tensors)

    def fill(staging: Path) -> None:
        save_file(tensors, str(staging / TENSORS_FILE))
        state = {"format": FORMAT, "tensors_sha256": sha256_file(staging / TENSORS_FILE), "checkpoint": tree}
        write_text_atomic(staging / STATE_FILE, json.dumps(state, allow_nan=True))

    write_directory_atomic(directory, fill, "checkpoint")


def read_state(directory: Path) -> dict:
    """The parsed ``state.json`` of a checkpoint, after checking the tensors file's SHA-256.

    Raises:
        CheckpointError: Naming the directory when a file is missing, unreadable, of another
            format, or when the tensors file does not match the hash recorded beside it.
    """
    directory, state = open_artifact(directory, "checkpoint", (STATE_FILE, TENSORS_FILE), STATE_FILE, CheckpointError)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {directory}: format {state.get('format')!r} is not {FORMAT!r}")
    if sha256_file(directory / TENSORS_FILE) != state.get("tensors_sha256"):
        raise CheckpointError(
            f"checkpoint {directory}: {TENSORS_FILE} does not match the SHA-256 recorded in {STATE_FILE} "
            "(torn or corrupt)"
        )
    return state


def load_checkpoint_dir(directory: Path) -> dict:
    """The checkpoint dict saved by :func:`save_checkpoint_dir` (checked with :func:`read_state`)."""
    state = read_state(directory)
    try:
        tensors = load_file(str(readable_directory(directory) / TENSORS_FILE))
        return decode(state["checkpoint"], tensors)
    except (SafetensorError, KeyError, ValueError, TypeError) as error:
        raise CheckpointError(f"checkpoint {directory}: unreadable ({type(error).__name__}: {error})") from error


def checkpoint_dirs(root: Path) -> list[Path]:
    """The ``step-*`` checkpoint directories under ``root``, oldest first (by step number)."""
    if not root.is_dir():
        return []
    found = {p.name.removeprefix(".").removesuffix(".old"): p for p in root.glob("*step-*")}
    names = sorted(n for n in found if n.startswith("step-") and n[5:].isdigit())
    return [root / n for n in names]


def newest_valid_checkpoint(root: Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint under ``root`` whose files are whole, and why newer ones were skipped.

    Returns:
        The directory (None when there is none at all) and one line per skipped checkpoint.

    Raises:
        CheckpointError: Checkpoints exist but none is usable (each reason listed).
    """
    skipped = []
    candidates = checkpoint_dirs(root)
    for directory in reversed(candidates):
        try:
            read_state(directory)
        except CheckpointError as error:
            skipped.append(str(error))
            continue
        return directory, skipped
    if candidates:
        raise CheckpointError("no usable checkpoint in " + str(root) + ":\n  - " + "\n  - ".join(skipped))
    return None, skipped

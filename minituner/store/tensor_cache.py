"""Tensors that are costly to compute and the same every time, kept on disk by a digest of their inputs.

Used for the self-replay sentences a base writes before fine-tuning (the same ones for the same
base, cues, sampling settings and seed: 1 s of CPU per run at the default size). The file's name is
a SHA-256 of every input that shapes the tensors, torch's version and minituner's sources
included, so a changed input or an edited source writes a new file and never reads a stale one.
Files are safetensors (no pickle), written atomically; one that cannot be read, or holds other
names, is computed and written anew.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from minituner.store.artifacts import write_atomic
from minituner.store.keys import content_key
from minituner.store.provenance import source_digest

log = logging.getLogger(__name__)


def cache_path(directory: Path, name: str, inputs: dict) -> Path:
    """Where the tensors computed from ``inputs`` (JSON-serialisable) are kept under ``directory``."""
    key = content_key(inputs | {"torch": torch.__version__, "sources": source_digest()}, length=16)
    return Path(directory) / f"{name}-{key}.safetensors"


def cached_tensors(
    directory: Path, name: str, inputs: dict, compute: Callable[[], dict[str, torch.Tensor]]
) -> tuple[dict[str, torch.Tensor], Path, bool]:
    """The tensors ``compute()`` returns for ``inputs``: read from the cache, else computed and cached.

    Returns:
        The tensors by name, the cache file, and whether it was read (False: computed now).
    """
    path = cache_path(directory, name, inputs)
    if path.is_file():
        try:
            return load_file(path), path, True
        except (SafetensorError, OSError) as error:  # torn by hand or a full disk: compute it again
            log.warning("ignoring the unreadable cache file %s (%s)", path, error)
    tensors = compute()
    write_atomic(path, lambda tmp: save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp)))
    return tensors, path, False

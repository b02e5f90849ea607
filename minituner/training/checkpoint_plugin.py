"""Lightning's checkpoint I/O plugin over minituner's own format (safetensors + JSON, atomic, never pickle)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO

from minituner.store.artifacts import remove_artifact
from minituner.store.checkpoint_io import load_checkpoint_dir, save_checkpoint_dir


class SafeCheckpointIO(CheckpointIO):
    """Lightning's checkpoint I/O through :func:`save_checkpoint_dir` / :func:`load_checkpoint_dir`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        save_checkpoint_dir(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        return load_checkpoint_dir(Path(path))

    def remove_checkpoint(self, path) -> None:
        """Delete an old checkpoint (``save_top_k``), but only one minituner wrote (anything else stays)."""
        remove_artifact(Path(path), "checkpoint")

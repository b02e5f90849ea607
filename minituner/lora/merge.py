"""Merging an adapter into its base (the library behind ``minituner-merge``).

from minituner.lora.layer import merge_adapters, unmerge_adapters
from minituner.lora.merge import apply_adapter, merged_copy

model, adapter = apply_adapter("outputs/bases/minigpt-<key>", "outputs/runs/<run>/adapter")
merge_adapters(model); unmerge_adapters(model)      # fold in / take out again
plain = merged_copy(model)                          # a plain MiniGPT with the update folded in
"""

from __future__ import annotations

import copy
from pathlib import Path

from torch import nn

from minituner.lora.adapter_io import Adapter, load_adapter, read_adapter
from minituner.lora.layer import lora_layers, merge_adapters
from minituner.model.minigpt import MiniGPT
from minituner.store.base_cache import load_base, save_base

DEFAULT_BASE_CACHE = Path("outputs/bases")


def apply_adapter(
    base_dir: Path, adapter_dir: Path, allow_base_mismatch: bool = False
) -> tuple[MiniGPT, Adapter]:
    """Load a base checkpoint and put an adapter directory on it (not merged).

    Raises:
        AdapterError: The adapter does not fit the base (see ``load_adapter``).
    """
    base = load_base(base_dir)
    adapter = load_adapter(base.model, adapter_dir, base.weights_sha256, allow_base_mismatch)
    return base.model, adapter


def merged_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every LoRA layer merged and replaced by its plain base layer."""
    merged = copy.deepcopy(model)
    merge_adapters(merged)
    for name, layer in lora_layers(merged).items():
        parent_name, _, child = name.rpartition(".")
        setattr(merged.get_submodule(parent_name) if parent_name else merged, child, layer.base_layer)
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


def merge_to_checkpoint(
    adapter_dir: Path, out_dir: Path, base_dir: Path | None = None, allow_base_mismatch: bool = False
) -> str:
    """Write a merged base checkpoint (same format as a pretrained base) to ``out_dir``.

    Args:
        adapter_dir: The adapter directory (``adapter_config.json`` + safetensors).
        out_dir: Where the merged checkpoint goes.
        base_dir: The base; by default the cache entry the adapter names
            (``outputs/bases/<base_model_name_or_path>``).
        allow_base_mismatch: Merge even if the adapter was trained on another base.

    Returns:
        The SHA-256 of the merged weights.
    """
    adapter = read_adapter(adapter_dir)
    if base_dir is None:
        base_dir = DEFAULT_BASE_CACHE / str(adapter.raw_config.get("base_model_name_or_path"))
    model, adapter = apply_adapter(Path(base_dir), Path(adapter_dir), allow_base_mismatch)
    merged = merged_copy(model)
    return save_base(
        merged,
        Path(out_dir),
        {
            "merged_from": {
                "base": str(base_dir),
                "adapter": str(adapter_dir),
                "adapter_sha256": adapter.sha256,
            }
        },
    )

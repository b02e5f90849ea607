"""Merging an adapter into its base: the Python API and the ``minituner-merge`` command.

from minituner.lora import merge_adapters, unmerge_adapters
from minituner.merge import apply_adapter, merged_copy

model, adapter = apply_adapter("outputs/bases/minigpt-<key>", "outputs/runs/<run>/adapter")
merge_adapters(model); unmerge_adapters(model)      # fold in / take out again
plain = merged_copy(model)                          # a plain MiniGPT with the update folded in
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from torch import nn

from minituner.adapter_io import Adapter, AdapterError, load_adapter, read_adapter
from minituner.base_store import load_base, save_base
from minituner.lora import lora_layers, merge_adapters
from minituner.model import MiniGPT

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


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``minituner-merge ADAPTER_DIR OUT_DIR [--base BASE_DIR]``."""
    parser = argparse.ArgumentParser(
        prog="minituner-merge", description="Merge a LoRA adapter into its base and save the result."
    )
    parser.add_argument("adapter_dir", type=Path, help="adapter directory (a run's adapter/)")
    parser.add_argument("out_dir", type=Path, help="directory for the merged checkpoint")
    parser.add_argument("--base", type=Path, default=None, help="base directory (default: from the adapter)")
    parser.add_argument(
        "--allow-base-mismatch", action="store_true", help="merge onto a base the adapter was not trained on"
    )
    args = parser.parse_args(argv)
    try:
        digest = merge_to_checkpoint(args.adapter_dir, args.out_dir, args.base, args.allow_base_mismatch)
    except (AdapterError, FileNotFoundError, ValueError) as error:
        print(f"minituner-merge: error: {error}", file=sys.stderr)
        return 2
    print(f"merged checkpoint written to {args.out_dir} (sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

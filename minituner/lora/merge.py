"""Merging an adapter into its base (the library behind ``minituner-merge``).

from minituner.lora.layer import merge_adapters, unmerge_adapters
from minituner.lora.merge import apply_adapter, merged_copy

model, adapter = apply_adapter("outputs/bases/minigpt-<key>", "outputs/runs/<run>/adapter")
merge_adapters(model); unmerge_adapters(model)      # fold in / take out again
plain = merged_copy(model)                          # a plain MiniGPT with the update folded in
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

from torch import nn

from minituner.lora.adapter_io import Adapter, AdapterError, load_adapter, read_adapter
from minituner.lora.layer import QuantizedMergeWarning, lora_layers, merge_adapters
from minituner.model.minigpt import MiniGPT
from minituner.quant.linear import SCHEMES, dequantized_copy, quantize_model
from minituner.store.base_cache import load_base, save_base
from minituner.store.ownership import OwnershipError, check_writable

DEFAULT_BASE_CACHE = Path("outputs/bases")


def apply_adapter(base_dir: Path, adapter_dir: Path, allow_base_mismatch: bool = False) -> tuple[MiniGPT, Adapter]:
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
        merged.set_submodule(name, layer.base_layer)
    for param in merged.parameters():
        param.requires_grad_(True)
    return merged


MERGE_TARGETS = ("quantized", "full_precision")


def merged_quantized(
    model: nn.Module,
    adapter_dir: Path,
    scheme: str,
    merge_into: str,
    base_sha256: str | None = None,
    allow_base_mismatch: bool = False,
) -> tuple[nn.Module, Adapter]:
    """The adapter merged into ``model`` (a plain fp32 base, left unchanged), stored in ``scheme``.

    Args:
        model: The full-precision base.
        adapter_dir: The adapter directory.
        scheme: A quantization scheme (``nf4``, ``nf4_dq``, ``int4``, ``int8``).
        merge_into: ``quantized``: quantize the base, then merge into the quantized weights
            (dequantize, add, quantize again; what PEFT does for a 4-bit base). ``full_precision``:
            merge into the fp32 base, then quantize the merged weights.
        base_sha256: The base's hash, checked against the adapter's record (None: not checked).
        allow_base_mismatch: Merge even if the adapter was trained on another base.

    Returns:
        The merged quantized model (no LoRA layers left) and the adapter that was merged.

    Raises:
        ValueError: ``merge_into`` is not one of ``MERGE_TARGETS``.
        AdapterError: The adapter does not fit the base.
    """
    if merge_into not in MERGE_TARGETS:
        raise ValueError(f"merge_into={merge_into!r} is not allowed: must be one of {list(MERGE_TARGETS)}")
    adapted = copy.deepcopy(model)
    if merge_into == "quantized":
        quantize_model(adapted, scheme)
    adapter = load_adapter(adapted, adapter_dir, base_sha256, allow_base_mismatch)
    merged = merged_copy(adapted)
    if merge_into == "full_precision":
        quantize_model(merged, scheme)
    return merged, adapter


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve() == directory.resolve() or directory.resolve() in path.resolve().parents


def default_base_dir(adapter: Adapter) -> Path:
    """The cache entry an adapter names (``outputs/bases/<base_model_name_or_path>``).

    Raises:
        AdapterError: The recorded name is not a plain directory name (so it cannot point outside the cache).
    """
    name = adapter.raw_config.get("base_model_name_or_path")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise AdapterError(
            f"{adapter.directory / 'adapter_config.json'}: base_model_name_or_path={name!r} is not a base cache "
            "name: pass the base directory explicitly (--base)"
        )
    return DEFAULT_BASE_CACHE / name


def _refuse_writing_inside(out_dir: Path, sources: dict[str, Path]) -> None:
    """Refuse an output directory inside one of the sources it is merged from (named by what they are)."""
    for what, source in sources.items():
        if _inside(out_dir, source):
            raise OwnershipError(
                f"refusing to write the merged model to {out_dir}: it is inside the {what} {source}; "
                "choose a path outside it"
            )


def merge_to_checkpoint(
    adapter_dir: Path,
    out_dir: Path,
    base_dir: Path | None = None,
    allow_base_mismatch: bool = False,
    overwrite: bool = False,
    quant: str = "none",
    merge_into: str = "quantized",
) -> str:
    """Write a merged base checkpoint (same format as a pretrained base) to ``out_dir``.

    Every argument is checked before any work: ``out_dir`` must be new, empty or an earlier
    merged model (``overwrite``: also a directory holding other files, which are kept), and
    not inside the adapter or the base.

    Args:
        adapter_dir: The adapter directory (``adapter_config.json`` + safetensors).
        out_dir: Where the merged checkpoint goes.
        base_dir: The base; by default the cache entry the adapter names
            (``outputs/bases/<base_model_name_or_path>``).
        allow_base_mismatch: Merge even if the adapter was trained on another base.
        overwrite: Write into a directory that holds files minituner did not write, keeping them.
        quant: ``none``: merge into the full-precision base. A scheme: the merged model stored in it
            (``merged_quantized``), written as the weights it computes with (dequantized, fp32).
        merge_into: With ``quant``: ``quantized`` or ``full_precision`` (see ``merged_quantized``).

    Returns:
        The SHA-256 of the merged weights.

    Raises:
        OwnershipError: ``out_dir`` holds something minituner may not replace.
        AdapterError: The adapter is unusable or does not fit the base.
        BaseCheckpointError: The base is unusable.
    """
    if quant not in ("none", *SCHEMES):
        raise ValueError(f"quant={quant!r} is not allowed: must be one of {['none', *SCHEMES]}")
    if merge_into not in MERGE_TARGETS:
        raise ValueError(f"merge_into={merge_into!r} is not allowed: must be one of {list(MERGE_TARGETS)}")
    out_dir, adapter_dir = Path(out_dir), Path(adapter_dir)
    check_writable(out_dir, "merged", overwrite)
    adapter = read_adapter(adapter_dir)  # checked before any work
    base_dir = Path(base_dir) if base_dir is not None else default_base_dir(adapter)
    _refuse_writing_inside(out_dir, {"adapter": adapter_dir, "base": base_dir})
    if quant == "none":
        model, adapter = apply_adapter(base_dir, adapter_dir, allow_base_mismatch)
        merged = merged_copy(model)
    else:
        base = load_base(base_dir)
        with warnings.catch_warnings():  # the choice of merge_into is the caller's: no warning
            warnings.simplefilter("ignore", QuantizedMergeWarning)
            quantized, adapter = merged_quantized(
                base.model, adapter_dir, quant, merge_into, base.weights_sha256, allow_base_mismatch
            )
        merged = dequantized_copy(quantized)
    metadata = {"merged_from": {"base": str(base_dir), "adapter": str(adapter_dir), "adapter_sha256": adapter.sha256}}
    if quant != "none":
        metadata["quantized"] = {"scheme": quant, "merged_into": merge_into}
    return save_base(merged, out_dir, metadata, kind="merged", overwrite=overwrite)

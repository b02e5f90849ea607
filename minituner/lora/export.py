"""A PiSSA, OLoRA or LoftQ adapter as a plain LoRA of the untouched base (``minituner-merge --as-lora``).

Such an adapter was trained against the frozen weight ``W' = W - scaling * B0 A0`` (``B0 A0``: the
``removed`` factors of ``residual_base.safetensors``), so what it does to the original base is
``W' + scaling * B A - W = scaling * (B A - B0 A0)``: a rank-2r LoRA with ``A' = [A; A0]`` and
``B' = [B, -B0]``. Its alpha doubles (times sqrt(2) with rsLoRA) so the scale is unchanged. The result
loads on the plain base in minituner and in PEFT, which converts PiSSA and OLoRA adapters the same way.

For LoftQ the original base is the full-precision one, so the export carries the adapter's correction of
the quantization error too: on the full-precision base it differs from the quantized model it was
trained on by that error.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from minituner.lora.adapter_io import (
    CONFIG_FILE,
    PEFT_PREFIX,
    WEIGHTS_FILE,
    Adapter,
    AdapterError,
    read_adapter,
)
from minituner.store.artifacts import sha256_file, write_directory_atomic, write_json_atomic
from minituner.store.ownership import check_writable


def plain_lora_tensors(adapter: Adapter) -> dict[str, torch.Tensor]:
    """The adapter's tensors with every ``lora_A`` / ``lora_B`` widened to ``[A; A0]`` / ``[B, -B0]``."""
    tensors = dict(adapter.tensors)
    for name, residual in adapter.residual.items():
        a_key, b_key = f"{PEFT_PREFIX}{name}.lora_A.weight", f"{PEFT_PREFIX}{name}.lora_B.weight"
        tensors[a_key] = torch.cat([tensors[a_key], residual["removed_A"].to(tensors[a_key].dtype)], dim=0)
        tensors[b_key] = torch.cat([tensors[b_key], -residual["removed_B"].to(tensors[b_key].dtype)], dim=1)
    return {k: v.contiguous() for k, v in tensors.items()}


def plain_lora_config(adapter: Adapter) -> dict:
    """The adapter's config at rank 2r, with the alpha that keeps its scale, and a plain init."""
    raw = dict(adapter.raw_config)
    alpha = raw["lora_alpha"] * (math.sqrt(2) if raw.get("use_rslora") else 2)
    return raw | {"r": 2 * raw["r"], "lora_alpha": alpha, "init_lora_weights": True}


def export_plain_lora(adapter_dir: Path, out_dir: Path, overwrite: bool = False) -> str:
    """Write ``out_dir``: the adapter of ``adapter_dir`` as a rank-2r plain LoRA of its original base.

    Returns:
        The SHA-256 of the exported ``adapter_model.safetensors``.

    Raises:
        AdapterError: The adapter is unusable or is already a plain LoRA (nothing to convert).
        OwnershipError: ``out_dir`` holds something minituner may not replace.
    """
    out_dir = Path(out_dir)
    check_writable(out_dir, "adapter", overwrite)
    adapter = read_adapter(adapter_dir)
    if adapter.residual is None:
        init = adapter.raw_config.get("init_lora_weights", True)
        raise AdapterError(
            f"{Path(adapter_dir) / CONFIG_FILE}: init_lora_weights={init!r} leaves the base unchanged, "
            "so the adapter is already a plain LoRA of it: nothing to export"
        )

    def fill(staging: Path) -> None:
        save_file(plain_lora_tensors(adapter), str(staging / WEIGHTS_FILE))
        write_json_atomic(staging / CONFIG_FILE, plain_lora_config(adapter))

    write_directory_atomic(out_dir, fill, "adapter", overwrite)
    return sha256_file(out_dir / WEIGHTS_FILE)

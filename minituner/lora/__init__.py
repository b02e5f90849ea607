"""LoRA: the adapter layer, where it is injected, its files (PEFT layout) and merging."""

from minituner.lora.adapter_io import AdapterError, load_adapter, read_adapter, save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora, select_targets
from minituner.lora.layer import (
    LoRALinear,
    QuantizedMergeWarning,
    lora_layers,
    merge_adapters,
    set_adapters_enabled,
    unmerge_adapters,
)
from minituner.lora.merge import apply_adapter, merge_to_checkpoint, merged_copy, merged_quantized

__all__ = [
    "AdapterError",
    "LoRAConfig",
    "LoRALinear",
    "QuantizedMergeWarning",
    "apply_adapter",
    "inject_lora",
    "load_adapter",
    "lora_layers",
    "merge_adapters",
    "merge_to_checkpoint",
    "merged_copy",
    "merged_quantized",
    "read_adapter",
    "save_adapter",
    "select_targets",
    "set_adapters_enabled",
    "unmerge_adapters",
]

"""LoRA: the adapter layer, where it is injected, its files (PEFT layout) and merging."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "layer": [
            "LoRALinear",
            "QuantizedMergeWarning",
            "lora_layers",
            "merge_adapters",
            "unmerge_adapters",
            "set_adapters_enabled",
        ],
        "inject": ["LoRAConfig", "inject_lora", "select_targets"],
        "adapter_io": ["AdapterError", "save_adapter", "load_adapter", "read_adapter"],
        "merge": ["apply_adapter", "merged_copy", "merged_quantized", "merge_to_checkpoint"],
    },
)

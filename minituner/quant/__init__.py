"""Quantized frozen weights: the NF4 / int4 / int8 codecs, QuantizedLinear, and exact storage accounting."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "codecs": ["nf4_quantize", "nf4_dequantize", "int4_quantize", "int4_dequantize", "int8_quantize"],
        "linear": ["SCHEMES", "QuantizedLinear", "quantize_model", "dequantized_copy", "changed_block_share"],
        "storage": ["storage_report", "quantized_storage"],
    },
)

"""Quantized frozen weights: the NF4 / int4 / int8 codecs, QuantizedLinear, and exact storage accounting."""

from minituner.quant.codecs import int4_dequantize, int4_quantize, int8_quantize, nf4_dequantize, nf4_quantize
from minituner.quant.linear import SCHEMES, QuantizedLinear, changed_block_share, dequantized_copy, quantize_model
from minituner.quant.storage import quantized_storage, storage_report

__all__ = [
    "QuantizedLinear",
    "SCHEMES",
    "changed_block_share",
    "dequantized_copy",
    "int4_dequantize",
    "int4_quantize",
    "int8_quantize",
    "nf4_dequantize",
    "nf4_quantize",
    "quantize_model",
    "quantized_storage",
    "storage_report",
]

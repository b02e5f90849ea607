"""Exact storage accounting: bytes and bits per parameter read from a model's actual tensors."""

from __future__ import annotations

from torch import nn

from minituner.quant.linear import SCHEMES, QuantizedLinear


def formula_bits(layer: QuantizedLinear) -> float:
    """Bits per weight that the scheme's formula predicts for this layer.

    With blocks of b values (64 by default): NF4: 4 + 32/b (4.5 at 64). NF4 with double
    quantization: 4 + 8/b + 32/(b * scale_block), plus the one fp32 mean over all the layer's
    weights (about 4.127 at 64 with scale blocks of 256). int4: 4 + 32/b. int8 per output channel:
    8 + 32/in_features.
    """
    block = layer.block_size
    if layer.scheme == "nf4_dq":
        return 4 + 8 / block + 32 / (block * layer.scale_block()) + 32 / layer.weight_numel
    if layer.scheme == "int8":
        return 8 + 32 / layer.in_features
    return 4 + 32 / block


def storage_report(model: nn.Module) -> list[dict]:
    """One row per linear layer: scheme, weights, stored bytes, measured and formula bits/weight.

    Bytes come from the tensors the layer holds for its weight (codes and scales; the bias is
    not counted), so the figure is what the model really stores.
    """
    rows = []
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear):
            stored = sum(b.numel() * b.element_size() for b in module.buffers())
            numel, scheme, formula = module.weight_numel, module.scheme, formula_bits(module)
        elif isinstance(module, nn.Linear) and name != "lm_head":
            numel = module.weight.numel()
            stored = numel * module.weight.element_size()
            scheme, formula = str(module.weight.dtype).removeprefix("torch."), 8 * module.weight.element_size()
        else:
            continue
        rows.append(
            {
                "layer": name,
                "scheme": scheme,
                "weights": numel,
                "bytes": stored,
                "bits_per_weight": 8 * stored / numel,
                "formula_bits_per_weight": formula,
            }
        )
    return rows


def quantized_rows(model: nn.Module) -> list[dict]:
    """Storage rows of the model's quantized linears only."""
    return [r for r in storage_report(model) if r["scheme"] in SCHEMES]


def quantized_storage(model: nn.Module) -> dict:
    """Bytes and bits per weight of the quantized linears, read from their buffers."""
    rows = quantized_rows(model)
    weights, stored = sum(r["weights"] for r in rows), sum(r["bytes"] for r in rows)
    return {"quantized_linear_bytes": stored, "quantized_bits_per_weight": 8 * stored / weights}

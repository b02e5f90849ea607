"""A frozen linear layer stored quantized, and the function that puts it into a model.

The packed codes and scales are buffers; the forward pass dequantizes into the input's dtype
inside a custom autograd function that keeps only a reference to those buffers for backward,
so the dequantized weight is never a parameter and never lives from forward to backward.
Gradients flow to the input, never to the base.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from minituner.quant.codecs import (
    NF4_BLOCK,
    SCALE_BLOCK,
    QuantizedScales,
    check_finite,
    dequantize_scales,
    double_quantize,
    int4_dequantize,
    int4_quantize,
    int8_dequantize,
    int8_quantize,
    nf4_dequantize,
    nf4_quantize,
    scale_block_size,
)

SCHEMES = ("nf4", "nf4_dq", "int4", "int8")


class _DequantizedLinear(torch.autograd.Function):
    """``x @ W.T`` with W dequantized on the fly in forward and again in backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:
        ctx.layer = layer  # the packed buffers only; the dense weight below is dropped
        return F.linear(x, layer.dequantized_weight(x.dtype))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        return grad_output @ ctx.layer.dequantized_weight(grad_output.dtype), None


def encode_weight(weight: torch.Tensor, scheme: str) -> dict[str, torch.Tensor]:
    """The buffers that store ``weight`` under ``scheme``: codes and scales, by buffer name."""
    if scheme in ("nf4", "nf4_dq"):
        packed, absmax = nf4_quantize(weight, NF4_BLOCK)
        if scheme == "nf4":
            return {"qweight": packed, "absmax": absmax}
        scales = double_quantize(absmax, SCALE_BLOCK)
        return {"qweight": packed, "absmax_codes": scales.codes, "absmax_code_scale": scales.code_scale,
                "absmax_offset": scales.offset}  # fmt: skip
    if scheme == "int4":
        packed, scale = int4_quantize(weight, NF4_BLOCK)
        return {"qweight": packed, "scale": scale}
    codes, scale = int8_quantize(weight)
    return {"qweight": codes, "scale": scale}


class QuantizedLinear(nn.Module):
    """A frozen ``nn.Linear`` held as quantized codes and scales.

    Args:
        linear: The layer to quantize (its weight must be finite).
        scheme: One of ``SCHEMES``.
        name: The layer's name in its model, for error messages.
        check_dequantized: Also check every dequantized weight for NaN/Inf (slower).
    """

    def __init__(self, linear: nn.Linear, scheme: str, name: str = "linear", check_dequantized: bool = False):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"quant.scheme={scheme!r} is not one of {list(SCHEMES)}")
        weight = linear.weight.detach()
        check_finite(weight, name)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scheme, self.name, self.check_dequantized = scheme, name, check_dequantized
        self.weight_shape = tuple(weight.shape)
        for buffer_name, tensor in encode_weight(weight, scheme).items():
            self.register_buffer(buffer_name, tensor)
        bias = linear.bias
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense (out, in) weight in ``dtype``, rebuilt from the codes."""
        shape = torch.Size(self.weight_shape)
        if self.scheme == "nf4":
            weight = nf4_dequantize(self.qweight, self.absmax, shape, dtype)
        elif self.scheme == "nf4_dq":
            scales = QuantizedScales(
                codes=self.absmax_codes, code_scale=self.absmax_code_scale, offset=self.absmax_offset
            )
            weight = nf4_dequantize(self.qweight, dequantize_scales(scales), shape, dtype)
        elif self.scheme == "int4":
            weight = int4_dequantize(self.qweight, self.scale, shape, dtype)
        else:
            weight = int8_dequantize(self.qweight, self.scale, dtype)
        if self.check_dequantized and not torch.isfinite(weight).all():
            raise FloatingPointError(f"dequantized weight of {self.name} holds NaN or Inf")
        return weight

    @torch.no_grad()
    def requantize_(self, weight: torch.Tensor) -> None:
        """Store a new dense (out, in) ``weight`` in this layer's scheme, in place of the old codes.

        Raises:
            ValueError: ``weight`` has another shape or holds NaN/Inf; the layer is left unchanged.
        """
        if tuple(weight.shape) != self.weight_shape:
            raise ValueError(
                f"{self.name}: a weight of shape {list(weight.shape)} cannot replace {list(self.weight_shape)}"
            )
        check_finite(weight, self.name)
        for buffer_name, tensor in encode_weight(weight.to(self.qweight.device), self.scheme).items():
            getattr(self, buffer_name).copy_(tensor)

    def code_blocks(self) -> torch.Tensor:
        """The stored codes, one row per quantization block (NF4/int4: 64 values; int8: one output row)."""
        if self.scheme == "int8":
            return self.qweight
        return self.qweight.view(-1, NF4_BLOCK // 2)  # two codes per byte

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _DequantizedLinear.apply(x, self)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def scale_block(self) -> int:
        """Scales per fp32 scale block under double quantization (derived per layer)."""
        return scale_block_size(self.weight_numel // NF4_BLOCK)

    @property
    def weight_numel(self) -> int:
        """Number of weights the codes stand for."""
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}"


def quantize_model(model: nn.Module, scheme: str, check_dequantized: bool = False) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` but the (tied) LM head by a ``QuantizedLinear``.

    Returns:
        The names of the quantized layers.
    """
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, QuantizedLinear(getattr(parent, child), scheme, name, check_dequantized))
    return names


def dequantized_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose quantized linears are plain ``nn.Linear`` layers with the dequantized weights.

    The copy computes what the quantized model computes (in fp32) and saves like any base; quantizing
    it again with the same scheme finds the same codes, up to the rounding of double-quantized scales.
    """
    dense = copy.deepcopy(model)
    for name, module in list(dense.named_modules()):
        if not isinstance(module, QuantizedLinear):
            continue
        linear = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(module.dequantized_weight(torch.float32))
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        parent_name, _, child = name.rpartition(".")
        setattr(dense.get_submodule(parent_name) if parent_name else dense, child, linear)
    return dense


def changed_block_share(before: nn.Module, after: nn.Module) -> float:
    """Share of quantization blocks whose codes differ between two quantized models of one shape.

    Layers are matched by the name they were quantized under (a LoRA wrapper does not change it).
    """
    blocks_before = {m.name: m.code_blocks() for m in before.modules() if isinstance(m, QuantizedLinear)}
    changed = total = 0
    for module in after.modules():
        if isinstance(module, QuantizedLinear):
            differs = (module.code_blocks() != blocks_before[module.name]).any(dim=1)
            changed, total = changed + int(differs.sum()), total + differs.numel()
    return changed / total if total else 0.0

"""A frozen linear layer stored quantized, and the function that puts it into a model.

The packed codes and scales are buffers; the forward pass dequantizes into the input's dtype
inside a custom autograd function that keeps only a reference to those buffers for backward,
so the dequantized weight is never a parameter and never lives from forward to backward.
Gradients flow to the input, never to the base.
"""

from __future__ import annotations

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
        if scheme in ("nf4", "nf4_dq"):
            packed, absmax = nf4_quantize(weight, NF4_BLOCK)
            self.register_buffer("qweight", packed)
            if scheme == "nf4":
                self.register_buffer("absmax", absmax)
            else:
                scales = double_quantize(absmax, SCALE_BLOCK)
                self.register_buffer("absmax_codes", scales.codes)
                self.register_buffer("absmax_code_scale", scales.code_scale)
                self.register_buffer("absmax_offset", scales.offset)
        elif scheme == "int4":
            packed, scale = int4_quantize(weight, NF4_BLOCK)
            self.register_buffer("qweight", packed)
            self.register_buffer("scale", scale)
        else:
            codes, scale = int8_quantize(weight)
            self.register_buffer("qweight", codes)
            self.register_buffer("scale", scale)
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

"""A frozen linear layer stored quantized, and the function that puts it into a model.

The packed codes and scales are buffers; the forward pass dequantizes into the input's dtype
inside a custom autograd function that keeps only a reference to those buffers for backward,
so the dequantized weight is never a parameter and never lives from forward to backward.
Gradients flow to the input, never to the base.
"""

from __future__ import annotations

import copy
import math

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
BLOCKED_SCHEMES = ("nf4", "nf4_dq", "int4")  # a scale per block of values (int8: a scale per row)
BLOCK_SIZES = (32, 64, 128, 256)  # values per NF4 / int4 block (quant.block_size)


# On the CPU a large weight is dequantized a few rows at a time (CHUNK_BYTES of fp32 each), so that
# no whole dense copy exists and each chunk stays in cache while it is multiplied. Small weights are
# faster whole (a few big matmuls beat many small ones), so only weights of more than CHUNKED_ABOVE
# chunks are chunked. benchmarks/quant_layer.py measures both paths (results/quant_layer.json).
CHUNK_BYTES = 4 << 20
CHUNKED_ABOVE = 4
# A chunk's row count is rounded to a multiple of ROW_TILE when that many rows fit half a chunk:
# the matmul runs markedly faster on row counts that are multiples of its tile (same benchmark).
ROW_TILE = 128


class _DequantizedLinear(torch.autograd.Function):
    """``x @ W.T`` with W dequantized on the fly in forward and again in backward.

    On the CPU a weight of more than ``CHUNKED_ABOVE`` chunks is never built whole: output rows are
    dequantized a chunk at a time (a chunk's codes span whole quantization blocks), each chunk
    multiplied and dropped. Elsewhere (one kernel on a GPU) and for small weights, the whole
    weight is dequantized once per pass (the reference path).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: QuantizedLinear) -> torch.Tensor:
        ctx.layer = layer  # the packed buffers only; the dense weights below are dropped
        chunks = layer.row_chunks(x.device)
        if chunks is None:
            return F.linear(x, layer.dequantized_weight(x.dtype))
        flat = x.reshape(-1, layer.in_features)
        out = torch.empty(flat.shape[0], layer.out_features, dtype=x.dtype, device=x.device)
        scales = layer.block_scales()
        for start, stop in chunks:
            out[:, start:stop] = flat @ layer.dequantized_rows(start, stop, x.dtype, scales).t()
        return out.view(*x.shape[:-1], layer.out_features)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        layer = ctx.layer
        chunks = layer.row_chunks(grad_output.device)
        if chunks is None:
            return grad_output @ layer.dequantized_weight(grad_output.dtype), None
        flat = grad_output.reshape(-1, layer.out_features)
        grad_input = torch.zeros(flat.shape[0], layer.in_features, dtype=flat.dtype, device=flat.device)
        scales = layer.block_scales()
        for start, stop in chunks:
            grad_input.addmm_(flat[:, start:stop], layer.dequantized_rows(start, stop, flat.dtype, scales))
        return grad_input.view(*grad_output.shape[:-1], layer.in_features), None


def encode_weight(weight: torch.Tensor, scheme: str, block: int = NF4_BLOCK) -> dict[str, torch.Tensor]:
    """The buffers that store ``weight`` under ``scheme`` (blocks of ``block`` values): codes and scales, by name."""
    if scheme in ("nf4", "nf4_dq"):
        packed, absmax = nf4_quantize(weight, block)
        if scheme == "nf4":
            return {"qweight": packed, "absmax": absmax}
        scales = double_quantize(absmax, SCALE_BLOCK)
        return {
            "qweight": packed,
            "absmax_codes": scales.codes,
            "absmax_code_scale": scales.code_scale,
            "absmax_offset": scales.offset,
        }
    if scheme == "int4":
        packed, scale = int4_quantize(weight, block)
        return {"qweight": packed, "scale": scale}
    codes, scale = int8_quantize(weight)
    return {"qweight": codes, "scale": scale}


def rounded_weight(
    weight: torch.Tensor, scheme: str, dtype: torch.dtype = torch.float32, block: int = NF4_BLOCK
) -> torch.Tensor:
    """``weight`` as ``scheme`` stores it: encoded, then decoded by the codecs alone (no ``QuantizedLinear``).

    An independent reference for what a quantized layer computes with (the preview's part B).
    """
    buffers = encode_weight(weight.detach().float(), scheme, block)
    if scheme == "int8":
        return int8_dequantize(buffers["qweight"], buffers["scale"], dtype)
    if scheme == "int4":
        return int4_dequantize(buffers["qweight"], buffers["scale"], weight.shape, dtype)
    if scheme == "nf4":
        return nf4_dequantize(buffers["qweight"], buffers["absmax"], weight.shape, dtype)
    stored = QuantizedScales(
        codes=buffers["absmax_codes"], code_scale=buffers["absmax_code_scale"], offset=buffers["absmax_offset"]
    )
    return nf4_dequantize(buffers["qweight"], dequantize_scales(stored), weight.shape, dtype)


class QuantizedLinear(nn.Module):
    """A frozen ``nn.Linear`` held as quantized codes and scales.

    Args:
        linear: The layer to quantize (its weight must be finite).
        scheme: One of ``SCHEMES``.
        name: The layer's name in its model, for error messages.
        check_dequantized: Also check every dequantized weight for NaN/Inf (slower).
        chunk_bytes: On the CPU, dequantize about this many fp32 bytes of weight rows at a time
            (the row count rounded as ``ROW_TILE`` says) when the weight holds more than
            ``CHUNKED_ABOVE`` such chunks (None: always the whole weight, the reference path).
        block_size: Values per NF4 / int4 block, one of ``BLOCK_SIZES`` (int8 ignores it).
    """

    def __init__(
        self,
        linear: nn.Linear,
        scheme: str,
        name: str = "linear",
        check_dequantized: bool = False,
        chunk_bytes: int | None = CHUNK_BYTES,
        block_size: int = NF4_BLOCK,
    ):
        super().__init__()
        if scheme not in SCHEMES:
            raise ValueError(f"quant.scheme={scheme!r} is not one of {list(SCHEMES)}")
        if block_size not in BLOCK_SIZES:
            raise ValueError(f"quant.block_size={block_size!r} is not one of {list(BLOCK_SIZES)}")
        weight = linear.weight.detach()
        check_finite(weight, name)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.scheme, self.name, self.check_dequantized = scheme, name, check_dequantized
        self.chunk_bytes, self.block_size = chunk_bytes, block_size
        self.weight_shape = tuple(weight.shape)
        for buffer_name, tensor in encode_weight(weight, scheme, block_size).items():
            self.register_buffer(buffer_name, tensor)
        bias = linear.bias
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False) if bias is not None else None

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense (out, in) weight in ``dtype``, rebuilt from the codes."""
        return self.dequantized_rows(0, self.out_features, dtype, self.block_scales())

    def block_scales(self) -> torch.Tensor:
        """The per-block (NF4, int4) or per-row (int8) fp32 scales, double quantization undone."""
        if self.scheme == "nf4_dq":
            stored = QuantizedScales(
                codes=self.absmax_codes, code_scale=self.absmax_code_scale, offset=self.absmax_offset
            )
            return dequantize_scales(stored)
        return self.absmax if self.scheme == "nf4" else self.scale

    def row_chunks(self, device: torch.device) -> list[tuple[int, int]] | None:
        """``(start, stop)`` output rows dequantized together on ``device``; None: the whole weight at once."""
        if (
            self.chunk_bytes is None
            or device.type != "cpu"
            or 4 * self.weight_numel <= CHUNKED_ABOVE * self.chunk_bytes
        ):
            return None
        budget_rows = self.chunk_bytes / (4 * self.in_features)
        if budget_rows >= ROW_TILE / 2:  # ROW_TILE * in_features values: whole quantization blocks
            rows = max(ROW_TILE, round(budget_rows / ROW_TILE) * ROW_TILE)
        else:  # a chunk starts and ends on a quantization block (int8: any row)
            align = 1 if self.scheme == "int8" else self.block_size // math.gcd(self.in_features, self.block_size)
            rows = max(align, int(budget_rows) // align * align)
        return [(start, min(start + rows, self.out_features)) for start in range(0, self.out_features, rows)]

    def dequantized_rows(self, start: int, stop: int, dtype: torch.dtype, scales: torch.Tensor) -> torch.Tensor:
        """Rows ``start:stop`` of the dense weight in ``dtype`` (``scales`` from :meth:`block_scales`)."""
        rows = stop - start
        if self.scheme == "int8":
            weight = int8_dequantize(self.qweight[start:stop], scales[start:stop], dtype)
        else:
            first, last = start * self.in_features, stop * self.in_features  # values, whole blocks
            block = self.block_size
            packed, block_scales = self.qweight[first // 2 : last // 2], scales[first // block : last // block]
            shape = torch.Size((rows, self.in_features))
            decode = int4_dequantize if self.scheme == "int4" else nf4_dequantize
            weight = decode(packed, block_scales, shape, dtype)
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
        for buffer_name, tensor in encode_weight(weight.to(self.qweight.device), self.scheme, self.block_size).items():
            getattr(self, buffer_name).copy_(tensor)

    def code_blocks(self) -> torch.Tensor:
        """The stored codes, one row per quantization block (NF4/int4: ``block_size`` values; int8: one row)."""
        if self.scheme == "int8":
            return self.qweight
        return self.qweight.view(-1, self.block_size // 2)  # two codes per byte

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _DequantizedLinear.apply(x, self)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def scale_block(self) -> int:
        """Scales per fp32 scale block under double quantization (derived per layer)."""
        return scale_block_size(self.weight_numel // self.block_size)

    @property
    def weight_numel(self) -> int:
        """Number of weights the codes stand for."""
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        block = f", block_size={self.block_size}" if self.scheme in BLOCKED_SCHEMES else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, scheme={self.scheme}{block}"


def quantizable_linears(model: nn.Module) -> list[str]:
    """The names of the ``nn.Linear`` layers a quantized base stores quantized: all but the (tied) LM head."""
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]


def quantize_model(
    model: nn.Module, scheme: str, check_dequantized: bool = False, block_size: int = NF4_BLOCK
) -> list[str]:
    """Replace every ``nn.Linear`` of ``model`` but the LM head by a ``QuantizedLinear`` (blocks of ``block_size``).

    Returns:
        The names of the quantized layers.
    """
    names = quantizable_linears(model)
    for name in names:
        layer = QuantizedLinear(model.get_submodule(name), scheme, name, check_dequantized, block_size=block_size)
        model.set_submodule(name, layer)
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
        dense.set_submodule(name, linear)
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

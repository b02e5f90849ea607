"""Weight codecs in pure PyTorch: NF4 (optionally with double-quantized scales), int4, int8.

NF4 follows the QLoRA paper: the weight is cut into blocks of 64 values, each block is scaled
by its absolute maximum into [-1, 1], and every value becomes the index of the nearest of the
16 NormalFloat levels (``NF4_CODEBOOK``); two 4-bit codes share a byte, the first in the high
nibble. Double quantization stores the fp32 block scales as 8-bit codes around their mean, in
blocks of 256 scales with one fp32 scale each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The 16 NormalFloat levels of the QLoRA paper (Dettmers et al., 2023), at full precision.
NF4_CODEBOOK = torch.tensor(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ]
)
# A value exactly halfway between two levels goes to the lower one (as bitsandbytes does).
_NF4_MIDPOINTS = (NF4_CODEBOOK[1:] + NF4_CODEBOOK[:-1]) / 2
# Byte -> its two levels (high nibble first): one lookup per byte instead of unpacking nibbles.
_NF4_PAIRS = torch.stack(torch.meshgrid(NF4_CODEBOOK, NF4_CODEBOOK, indexing="ij"), dim=-1).view(256, 2)
# The same pairs, each as one 8-byte integer: gathering 256 scalars is about twice as fast on
# the CPU as gathering rows of two floats, and viewing the result as float32 gives the pairs back.
_NF4_PAIRS_PACKED = _NF4_PAIRS.contiguous().view(torch.int64).view(256)
# Bytes looked up per CPU gather: the int32 index copy of a chunk stays small and is reused by the
# allocator, where one of a whole large layer (over 32 MiB) would be fresh, page-faulting memory.
_GATHER_CHUNK = 1 << 18
NF4_BLOCK = 64
SCALE_BLOCK = 256


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes (values 0..15, even count) per uint8: first in the high nibble."""
    codes = codes.to(torch.uint8).view(-1, 2)
    return (codes[:, 0] << 4) | codes[:, 1]


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: uint8 codes, twice as many as bytes."""
    return torch.stack((packed >> 4, packed & 0x0F), dim=-1).view(-1)


def _blocks(weight: torch.Tensor, block: int) -> torch.Tensor:
    flat = weight.detach().float().reshape(-1)
    if flat.numel() % block:
        raise ValueError(f"{flat.numel()} values do not split into blocks of {block}")
    return flat.view(-1, block)


def check_finite(weight: torch.Tensor, name: str) -> None:
    """Refuse a weight holding NaN or Inf, naming the layer."""
    if not torch.isfinite(weight).all():
        raise ValueError(f"cannot quantize {name}: its weight holds NaN or Inf")


@dataclass
class QuantizedScales:
    """Per-block fp32 scales, or their double-quantized form (codes + per-256 scale + mean)."""

    absmax: torch.Tensor | None = None  # fp32 (n_blocks,), plain NF4
    codes: torch.Tensor | None = None  # int8 (n_blocks,), double quantization
    code_scale: torch.Tensor | None = None  # fp32 (n_scale_blocks,)
    offset: torch.Tensor | None = None  # fp32 (), mean of the absmax values


def scale_block_size(n_blocks: int, requested: int = SCALE_BLOCK) -> int:
    """The scale-block size for a layer: ``requested``, or all its blocks if it has fewer.

    A 64x64 weight has only 64 NF4 blocks, fewer than one block of 256 scales.
    """
    return min(requested, n_blocks)


def double_quantize(absmax: torch.Tensor, block: int = SCALE_BLOCK) -> QuantizedScales:
    """fp32 block scales -> int8 codes around their mean, one fp32 scale per ``block`` codes."""
    block = scale_block_size(absmax.numel(), block)
    if absmax.numel() % block:
        raise ValueError(f"{absmax.numel()} scales do not split into blocks of {block}")
    offset = absmax.mean()
    centred = (absmax - offset).view(-1, block)
    code_scale = centred.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round(centred / code_scale[:, None] * 127).clamp(-127, 127).to(torch.int8)
    return QuantizedScales(codes=codes.view(-1), code_scale=code_scale, offset=offset)


def dequantize_scales(scales: QuantizedScales) -> torch.Tensor:
    """The fp32 block scales (exact for plain NF4, approximate after double quantization)."""
    if scales.absmax is not None:
        return scales.absmax
    block = scales.codes.numel() // scales.code_scale.numel()
    centred = scales.codes.view(-1, block).float() / 127 * scales.code_scale[:, None]
    return centred.view(-1) + scales.offset


def nf4_quantize(weight: torch.Tensor, block: int = NF4_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """NF4 codes (packed, uint8) and fp32 absmax per block of ``block`` values."""
    blocks = _blocks(weight, block)
    absmax = blocks.abs().amax(dim=1)
    # times the reciprocal, not divided: bitwise the reference's (bitsandbytes's) rounding
    normalized = blocks * (1.0 / absmax.clamp(min=torch.finfo(torch.float32).tiny))[:, None]
    codes = torch.bucketize(normalized, _NF4_MIDPOINTS.to(weight.device), out_int32=True)
    return pack_nibbles(codes.view(-1)), absmax


def nf4_dequantize(
    packed: torch.Tensor, absmax: torch.Tensor, shape: torch.Size, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Weight of ``shape`` from packed NF4 codes and per-block scales."""
    table = _NF4_PAIRS_PACKED.to(packed.device)
    if packed.device.type != "cpu" or packed.numel() <= _GATHER_CHUNK:  # one kernel on a GPU
        pairs = table.index_select(0, packed.int())
    else:
        pairs = torch.empty(packed.numel(), dtype=torch.int64)
        for start in range(0, packed.numel(), _GATHER_CHUNK):
            stop = start + _GATHER_CHUNK
            torch.index_select(table, 0, packed[start:stop].int(), out=pairs[start:stop])
    levels = pairs.view(torch.float32)  # two levels per byte, high nibble first
    return levels.view(absmax.numel(), -1).mul_(absmax[:, None]).view(shape).to(dtype)


def int4_quantize(weight: torch.Tensor, group: int = NF4_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int4 per group: codes -7..7 stored +8 as packed nibbles; fp32 scale per group."""
    groups = _blocks(weight, group)
    scale = groups.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 7
    codes = torch.round(groups / scale[:, None]).clamp(-7, 7) + 8
    return pack_nibbles(codes.view(-1)), scale


def int4_dequantize(
    packed: torch.Tensor, scale: torch.Tensor, shape: torch.Size, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Weight of ``shape`` from packed int4 codes and per-group scales."""
    codes = unpack_nibbles(packed).float() - 8
    return (codes.view(scale.numel(), -1) * scale[:, None]).view(shape).to(dtype)


def int8_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output channel (row): int8 codes and one fp32 scale per row."""
    rows = weight.detach().float()
    scale = rows.abs().amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny) / 127
    return torch.round(rows / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def int8_dequantize(codes: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Weight from int8 codes and per-row scales."""
    return (codes.float() * scale[:, None]).to(dtype)

"""Initialisations that move part of the base into the adapter: PiSSA, OLoRA and LoftQ.

Each starts a LoRA layer at factors (A, B) taken from the base weight W and freezes a changed
weight W' in its place, so that at step 0 the layer still computes (about) W:

- ``pissa``: A, B from the top-r singular triplets of W (``B A = U_r S_r V_r^T / scaling``, the root
  of S split between them); ``W' = W - scaling * B A``. On a quantized base W' is what gets quantized:
  the SVD runs on the full-precision weight (QPiSSA), so the adapter holds the principal part exactly
  and only the residual is rounded.
- ``olora``: A, B from the QR decomposition of W (``B = Q[:, :r]``, ``A = R[:r]``), PEFT's OLoRA;
  ``W' = W - scaling * B A``.
- ``loftq`` (a quantized base only): alternately quantize ``W - scaling * B A`` and refit A, B by a
  rank-r SVD of what that quantization lost (``iters`` rounds, the first from B A = 0), so that
  ``deq(Q) + scaling * B A`` is closer to W than ``deq(Q(W))`` alone: the frozen weight is the last
  ``W - scaling * B A`` that was quantized.

``W = W' + scaling * removed_B @ removed_A`` always holds, which is what turns a trained adapter
back into a plain LoRA of the original base: the update ``scaling * (B A - removed_B removed_A)``,
a rank-2r adapter ``[B, -removed_B] [A; removed_A]`` (``export.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from minituner.quant.linear import rounded_weight

RESIDUAL_INITS = ("pissa", "olora", "loftq")  # each needs r <= min(out, in) of every adapted layer


@dataclass
class ResidualStart:
    """How one adapted layer starts: its frozen weight, the adapter's factors and what left W.

    Attributes:
        frozen_weight: (out, in) fp32, the weight the frozen layer is built from (then quantized or cast).
        lora_A: (r, in) the adapter's first factor at step 0.
        lora_B: (out, r) its second factor at step 0.
        removed_A: (r, in) with ``removed_B``: ``W = frozen_weight + scaling * removed_B @ removed_A``.
        removed_B: (out, r).
    """

    frozen_weight: torch.Tensor
    lora_A: torch.Tensor
    lora_B: torch.Tensor
    removed_A: torch.Tensor
    removed_B: torch.Tensor


def low_rank_factors(weight: torch.Tensor, r: int, scaling: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, B) with ``scaling * B @ A`` the best rank-r approximation of ``weight`` (singular values split evenly)."""
    u, s, vh = torch.linalg.svd(weight.double(), full_matrices=False)
    root = torch.sqrt(s[:r] / scaling)
    return (root[:, None] * vh[:r]).float(), (u[:, :r] * root[None, :]).float()


def pissa_start(weight: torch.Tensor, r: int, scaling: float) -> ResidualStart:
    """PiSSA: the principal rank-r part of ``weight`` becomes the adapter, the rest stays frozen."""
    weight = weight.float()
    lora_A, lora_B = low_rank_factors(weight, r, scaling)
    return ResidualStart(weight - scaling * (lora_B @ lora_A), lora_A, lora_B, lora_A, lora_B)


def olora_start(weight: torch.Tensor, r: int, scaling: float) -> ResidualStart:
    """OLoRA: the first r columns of Q and rows of R (``weight = Q R``) become B and A, unscaled as in PEFT."""
    weight = weight.float()
    q, upper = torch.linalg.qr(weight)
    lora_A, lora_B = upper[:r].contiguous(), q[:, :r].contiguous()
    return ResidualStart(weight - scaling * (lora_B @ lora_A), lora_A, lora_B, lora_A, lora_B)


def loftq_start(
    weight: torch.Tensor, r: int, scaling: float, scheme: str, block_size: int, iters: int
) -> ResidualStart:
    """LoftQ: ``iters`` rounds of quantize, then fit A, B to the quantization error by a rank-r SVD."""
    weight = weight.float()
    removed_A = torch.zeros(r, weight.shape[1])
    removed_B = torch.zeros(weight.shape[0], r)
    for round_ in range(iters):
        frozen = weight - scaling * (removed_B @ removed_A)
        lora_A, lora_B = low_rank_factors(weight - rounded_weight(frozen, scheme, block=block_size), r, scaling)
        if round_ < iters - 1:
            removed_A, removed_B = lora_A, lora_B
    return ResidualStart(frozen, lora_A, lora_B, removed_A, removed_B)


def residual_starts(
    model: nn.Module,
    names: list[str],
    init: str,
    r: int,
    scaling: float,
    scheme: str = "none",
    block_size: int = 64,
    loftq_iters: int = 1,
) -> dict[str, ResidualStart]:
    """The start of every layer in ``names`` of a full-precision ``model`` under ``init``.

    Raises:
        ValueError: ``init`` is not a residual init, ``loftq`` without a quantization scheme, or a
            rank above a layer's smaller dimension.
    """
    if init not in RESIDUAL_INITS:
        raise ValueError(f"lora.init={init!r} is not allowed here: must be one of {list(RESIDUAL_INITS)}")
    if init == "loftq" and scheme == "none":
        raise ValueError("lora.init='loftq' needs a quantized base: set quant (e.g. quant=nf4_dq)")
    starts = {}
    for name in names:
        weight = model.get_submodule(name).weight.detach()
        if r > min(weight.shape):
            raise ValueError(
                f"lora.r={r} with lora.init={init!r} is not allowed: {name} is {weight.shape[0]}x{weight.shape[1]}, "
                f"so its rank is at most {min(weight.shape)}"
            )
        if init == "pissa":
            starts[name] = pissa_start(weight, r, scaling)
        elif init == "olora":
            starts[name] = olora_start(weight, r, scaling)
        else:
            starts[name] = loftq_start(weight, r, scaling, scheme, block_size, loftq_iters)
    return starts


@torch.no_grad()
def freeze_residuals(model: nn.Module, starts: dict[str, ResidualStart]) -> None:
    """Write each start's frozen weight into the (still full-precision) linear it belongs to."""
    for name, start in starts.items():
        linear = model.get_submodule(name)
        linear.weight.copy_(start.frozen_weight.to(linear.weight.dtype))

"""LoRA from scratch: a layer that wraps a frozen linear layer with a low-rank update.

``y = base_layer(x) + scaling * lora_B(lora_A(dropout(x)))`` with ``lora_A`` kaiming-uniform,
``lora_B`` zeros (so the wrapped layer starts exactly equal to its base) and
``scaling = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA). Module and attribute names follow
PEFT (``base_layer``, ``lora_A``, ``lora_B``) so adapter checkpoints use PEFT's key layout.
"""

from __future__ import annotations

import itertools
import math
import warnings

import torch
from torch import nn

from minituner.quant.linear import QuantizedLinear


class QuantizedMergeWarning(UserWarning):
    """Merging into (or unmerging from) a quantized base re-quantizes its weight: a lossy step."""


class LoRALinear(nn.Module):
    """A LoRA adapter around a linear-like layer (composition, not inheritance).

    Args:
        base_layer: The frozen layer; needs ``in_features``/``out_features`` (an ``nn.Linear``).
        r: Rank of the update (> 0).
        alpha: Scale numerator (> 0).
        dropout: Dropout probability on the LoRA path's input, in [0, 1).
        use_rslora: Scale by ``alpha / sqrt(r)`` instead of ``alpha / r``.
        generator: RNG for ``lora_A``'s init, so the same seed gives the same adapter.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        use_rslora: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if r <= 0:
            raise ValueError(f"lora.r={r} is not allowed: must be a positive integer")
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scaling = alpha / math.sqrt(r) if use_rslora else alpha / r
        # a quantized base may hold buffers only: take the device from whatever it has
        tensor = next(itertools.chain(base_layer.parameters(), base_layer.buffers()), None)
        factory = {"device": tensor.device} if tensor is not None else {}
        self.lora_A = nn.Linear(self.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True
        self.merged = False
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged or not self.enabled:  # merged: the update already sits in the base weight
            return y
        update = self.lora_B(self.lora_A(self.lora_dropout(x.to(self.lora_A.weight.dtype))))
        return y + (update * self.scaling).to(y.dtype)

    def set_enabled(self, enabled: bool) -> None:
        """Switch the adapter on or off; off, the layer is exactly its base layer."""
        if self.merged and not enabled:
            raise RuntimeError("cannot disable a merged LoRA layer: unmerge() it first")
        self.enabled = enabled

    def delta_weight(self) -> torch.Tensor:
        """The dense update ``scaling * B @ A``, shaped like the base weight (out, in)."""
        return (self.lora_B.weight @ self.lora_A.weight) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight; a second call does nothing.

        A quantized base (``QuantizedLinear``) is dequantized, updated and quantized again in its
        scheme, which rounds the result to the codebook: a ``QuantizedMergeWarning`` says so.

        Raises:
            ValueError: The merged weight would hold NaN or Inf; the base is left unchanged.
        """
        if self.merged:
            return
        self._write_base_weight(self.base_weight() + self.delta_weight().float(), "merge")
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again; does nothing when not merged.

        On a quantized base this rounds once more (``QuantizedMergeWarning``): the codes need not
        come back to what they were before the merge.
        """
        if not self.merged:
            return
        self._write_base_weight(self.base_weight() - self.delta_weight().float(), "unmerge")
        self.merged = False

    def base_weight(self) -> torch.Tensor:
        """The base layer's dense (out, in) weight in fp32 (dequantized for a quantized base)."""
        if isinstance(self.base_layer, QuantizedLinear):
            return self.base_layer.dequantized_weight(torch.float32)
        if not isinstance(getattr(self.base_layer, "weight", None), torch.Tensor):
            raise TypeError(f"cannot merge into a {type(self.base_layer).__name__}: it has no weight tensor")
        return self.base_layer.weight.float()

    def _write_base_weight(self, weight: torch.Tensor, action: str) -> None:
        if not torch.isfinite(weight).all():
            raise ValueError(f"refusing to {action}: the merged weight would contain NaN or Inf")
        if isinstance(self.base_layer, QuantizedLinear):
            warnings.warn(
                f"{action} on a {self.base_layer.scheme} base: each weight is dequantized, "
                "updated and quantized again, so it is rounded to the codebook and the model only approximates "
                "the unmerged adapter (merge into the full-precision base, then quantize, is the alternative)",
                QuantizedMergeWarning,
                stacklevel=4,  # past no_grad's wrapper: the caller of merge()
            )
            self.base_layer.requantize_(weight)
        else:
            self.base_layer.weight.copy_(weight.to(self.base_layer.weight.dtype))

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters by their name inside this layer."""
        return {"lora_A.weight": self.lora_A.weight, "lora_B.weight": self.lora_B.weight}

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}, merged={self.merged}"


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRA layer of ``model`` by its module name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def adapter_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """All adapter parameters of ``model`` by full name, found by layer type, not by name."""
    return {
        f"{name}.{key}": param
        for name, layer in lora_layers(model).items()
        for key, param in layer.adapter_parameters().items()
    }


def merge_adapters(model: nn.Module) -> None:
    """Merge every LoRA layer of ``model`` (idempotent)."""
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_adapters(model: nn.Module) -> None:
    """Unmerge every LoRA layer of ``model`` (idempotent)."""
    for layer in lora_layers(model).values():
        layer.unmerge()


def set_adapters_enabled(model: nn.Module, enabled: bool) -> None:
    """Turn every LoRA layer of ``model`` on or off."""
    for layer in lora_layers(model).values():
        layer.set_enabled(enabled)

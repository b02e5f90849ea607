"""LoRA from scratch: a layer that wraps a frozen linear layer with a low-rank update.

``y = base_layer(x) + scaling * lora_B(lora_A(dropout(x)))`` with ``lora_A`` kaiming-uniform,
``lora_B`` zeros (so the wrapped layer starts exactly equal to its base) and
``scaling = alpha / r`` (``alpha / sqrt(r)`` with rsLoRA). Module and attribute names follow
PEFT (``base_layer``, ``lora_A``, ``lora_B``, ``lora_magnitude_vector``) so adapter checkpoints use
PEFT's key layout.

DoRA (``dora=True``) learns a magnitude ``m`` per output feature on top: the layer computes
``m * (W + scaling * B A) / ||W + scaling * B A||`` (row norms) times x, plus the bias. The norm is
treated as a constant in backward (the paper's section 4.3, as PEFT does), and ``m`` starts at the
base's row norms, so the layer starts equal to its base. With dropout active the base's share is
recomputed on the dropped-out input, as PEFT does.
"""

from __future__ import annotations

import itertools
import math
import warnings

import torch
import torch.nn.functional as F
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
        dora: Add DoRA's magnitude vector (see the module docstring).
        gaussian_init: Draw ``lora_A`` from a normal with std ``1 / r`` (PEFT's ``gaussian``) instead
            of kaiming-uniform.
    """

    def __init__(
        self,
        base_layer: nn.Module,
        r: int,
        alpha: float,
        dropout: float = 0.0,
        use_rslora: bool = False,
        generator: torch.Generator | None = None,
        dora: bool = False,
        gaussian_init: bool = False,
    ):
        super().__init__()
        if r <= 0:
            raise ValueError(f"lora.r={r} is not allowed: must be a positive integer")
        self.base_layer = base_layer
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        self.r, self.alpha, self.use_rslora = r, alpha, use_rslora
        self.scaling = self.scaling_of(r, alpha, use_rslora)
        # a quantized base may hold buffers only: take the device from whatever it has
        tensor = next(itertools.chain(base_layer.parameters(), base_layer.buffers()), None)
        factory = {"device": tensor.device} if tensor is not None else {}
        self.lora_A = nn.Linear(self.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.enabled = True
        self.merged = False
        if gaussian_init:
            nn.init.normal_(self.lora_A.weight, std=1 / r, generator=generator)
        else:
            nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5), generator=generator)
        nn.init.zeros_(self.lora_B.weight)
        self.lora_magnitude_vector = None
        self.dora_factor = None  # m / ||W + delta|| while merged: what unmerge divides by
        if dora:
            with torch.no_grad():
                norm = torch.linalg.norm(self.base_weight(), dim=1)  # B = 0: the base's own row norms
            self.lora_magnitude_vector = nn.Parameter(norm.to(self.lora_A.weight.device))

    @staticmethod
    def scaling_of(r: int, alpha: float, use_rslora: bool = False) -> float:
        """The update's scale: ``alpha / r``, or ``alpha / sqrt(r)`` with rsLoRA."""
        return alpha / math.sqrt(r) if use_rslora else alpha / r

    @property
    def dora(self) -> bool:
        """Whether this layer is a DoRA layer."""
        return self.lora_magnitude_vector is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged or not self.enabled:  # merged: the update already sits in the base weight
            return y
        dropped = self.lora_dropout(x.to(self.lora_A.weight.dtype))
        update = self.lora_B(self.lora_A(dropped)) * self.scaling
        if self.dora:
            update = self._dora_output(y, dropped, update)
        return y + update.to(y.dtype)

    def _dora_output(self, y: torch.Tensor, dropped: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
        """What DoRA adds to the base's output: ``(g - 1) * W x + g * update``, g = m / ||W + delta||."""
        weight = self.base_weight().to(update.dtype)
        with torch.no_grad():  # a constant in backward
            norm = torch.linalg.norm(weight + self.delta_weight().to(weight.dtype), dim=1)
        factor = self.lora_magnitude_vector / norm
        if self.training and isinstance(self.lora_dropout, nn.Dropout):  # the base's share on the dropped input
            base = F.linear(dropped, weight)
        else:
            bias = getattr(self.base_layer, "bias", None)
            base = (y if bias is None else y - bias).to(update.dtype)
        return (factor - 1) * base + factor * update

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
        merged = self.base_weight() + self.delta_weight().float()
        if self.dora:  # the whole direction, scaled to its magnitude: m * (W + delta) / ||W + delta||
            self.dora_factor = self.lora_magnitude_vector.float() / torch.linalg.norm(merged, dim=1)
            merged = merged * self.dora_factor.unsqueeze(1)
        self._write_base_weight(merged, "merge")
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract the update from the base weight again; does nothing when not merged.

        On a quantized base this rounds once more (``QuantizedMergeWarning``): the codes need not
        come back to what they were before the merge.
        """
        if not self.merged:
            return
        weight = self.base_weight()
        if self.dora:
            weight = weight / self.dora_factor.unsqueeze(1)
            self.dora_factor = None
        self._write_base_weight(weight - self.delta_weight().float(), "unmerge")
        self.merged = False

    def base_weight(self) -> torch.Tensor:
        """The base layer's dense (out, in) weight in fp32 (dequantized for a quantized base)."""
        if isinstance(self.base_layer, QuantizedLinear):
            return self.base_layer.dequantized_weight(torch.float32)
        if not isinstance(getattr(self.base_layer, "weight", None), torch.Tensor):
            raise TypeError(f"cannot merge into a {type(self.base_layer).__name__}: it has no weight tensor")
        return self.base_layer.weight.float()

    @torch.no_grad()
    def start_from(self, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
        """Start the adapter at these factors (PiSSA, OLoRA, LoftQ); DoRA's magnitude becomes ``||W + delta||``."""
        self.lora_A.weight.copy_(lora_A)
        self.lora_B.weight.copy_(lora_B)
        if self.dora:
            self.lora_magnitude_vector.copy_(torch.linalg.norm(self.base_weight() + self.delta_weight().float(), dim=1))

    @torch.no_grad()
    def set_frozen_weight(self, weight: torch.Tensor) -> None:
        """Replace the base's dense (out, in) weight: quantized again in its scheme, or cast to its dtype."""
        if isinstance(self.base_layer, QuantizedLinear):
            self.base_layer.requantize_(weight)
        else:
            self.base_layer.weight.copy_(weight.to(self.base_layer.weight.dtype))

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
        self.set_frozen_weight(weight)

    def adapter_parameters(self) -> dict[str, nn.Parameter]:
        """The adapter's own parameters by their name inside this layer."""
        params = {"lora_A.weight": self.lora_A.weight, "lora_B.weight": self.lora_B.weight}
        if self.dora:
            params["lora_magnitude_vector"] = self.lora_magnitude_vector
        return params

    def extra_repr(self) -> str:
        dora = ", dora" if self.dora else ""
        return f"r={self.r}, alpha={self.alpha}, scaling={self.scaling:g}{dora}, merged={self.merged}"


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

"""The preview's part B: one adapter on a half-precision base (A) and on an NF4 base (B), and its check.

The check, and why its bound holds (stated before anything is measured):

* B stores the base's linears as NF4 codes and everything else in the half dtype; the adapter
  adds its output to each quantized layer's. C is the same model built independently of B's
  layers: the adapter on dense linears that hold the NF4-rounded weights (encoded and decoded by
  the codecs, not by B's ``QuantizedLinear``), in the same half dtype.
* B and C compute the same function of the same weights in the same dtype; only the order of
  operations differs (a bias added apart or fused, say), and a rounding difference in one layer
  carries on through the rest. Each of them differs from exact arithmetic by about what rounding
  to the half dtype does to the logits, measured on the same batch as fp32 base against half base
  with the same adapter (``e_half``). So B and C differ by at most ``2 * e_half``: the tolerance.
  A composition bug (the adapter quantized with the base, scaled wrongly, missing on a layer,
  codes decoded with another block's scales) moves B by far more than rounding. The check sees a
  bug only when it is larger than that bound: a bf16 base, rounded more coarsely, sees less.
* With the composition right, A - B = A - C: the NF4 error of the adapted model. It is reported
  beside the bare bases' own NF4 error on the same batch; their ratio is near 1 when the adapter
  neither hides nor amplifies the quantization error.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from minituner.lora.adapter_io import load_adapter, read_adapter
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import quantizable_linears, rounded_weight
from minituner.reports.merge_fidelity import base_copy, compare_logits, logits_of
from minituner.store.base_cache import LoadedBase


def rounded_copy(base: LoadedBase, scheme: str, dtype: str, adapter_dir: Path) -> nn.Module:
    """Model C: the adapter on dense linears holding the ``scheme``-rounded weights, the rest in ``dtype``.

    A PiSSA / OLoRA / LoftQ adapter's layers hold its rounded residual instead of the base's weight.
    """
    model = copy.deepcopy(base.model)
    cast_frozen_base(model, dtype)
    residual = read_adapter(adapter_dir).residual or {}
    with torch.no_grad():
        for name in quantizable_linears(model):
            layer = model.get_submodule(name)
            weight = residual[name]["frozen_weight"] if name in residual else base.model.get_submodule(name).weight
            layer.weight.copy_(rounded_weight(weight, scheme, layer.weight.dtype))
    load_adapter(model, adapter_dir, base.weights_sha256, put_residual=False)
    return model


def parity(
    base: LoadedBase,
    scheme: str,
    half: str,
    adapter_dir: Path,
    batch: tuple[torch.Tensor, torch.Tensor],
    model_b: nn.Module | None = None,
) -> tuple[dict, dict]:
    """Part B's figures and verdict for ``adapter_dir`` on ``base``, and the comparisons around it.

    Args:
        base: The full-precision base.
        scheme: The quantization scheme of model B.
        half: The half dtype of model A and of the rest of model B (``float16`` or ``bfloat16``).
        adapter_dir: The adapter both carry.
        batch: Input ids and the mask of the scored positions.
        model_b: Model B as built elsewhere (None: built here); the tests pass broken ones.

    Returns:
        The check: A vs B (``mean_abs_diff``, ``relative_diff``, ``top1_agreement``, ...),
        ``composition_error`` (B vs C), ``half_rounding`` (fp32 vs half base with the adapter),
        ``tolerance`` (twice that),
        ``within_tolerance``, ``bare_relative_diff`` (bare bases, fp32 vs ``scheme``) and
        ``ratio_to_bare``. And the context rows by label (each a ``compare_logits`` result).
    """
    inputs, mask = batch
    model_b = model_b if model_b is not None else base_copy(base, scheme, half, adapter_dir)
    logits = {
        "A": logits_of(base_copy(base, "none", half, adapter_dir), inputs),
        "B": logits_of(model_b, inputs),
        "C": logits_of(rounded_copy(base, scheme, half, adapter_dir), inputs),
        "fp32": logits_of(base_copy(base, adapter_dir=adapter_dir), inputs),
        "fp32 NF4": logits_of(base_copy(base, scheme, adapter_dir=adapter_dir), inputs),
        "bare": logits_of(base.model, inputs),
        "bare NF4": logits_of(base_copy(base, scheme), inputs),
    }
    context = {
        "fp32 base vs NF4 base (fp32 compute)": compare_logits(logits["fp32"], logits["fp32 NF4"], mask),
        f"fp32 base vs {half} base": compare_logits(logits["fp32"], logits["A"], mask),
        "bare bases, no adapter: fp32 vs NF4": compare_logits(logits["bare"], logits["bare NF4"], mask),
    }
    check = compare_logits(logits["A"], logits["B"], mask)
    check["composition_error"] = compare_logits(logits["C"], logits["B"], mask)["relative_diff"]
    check["half_rounding"] = context[f"fp32 base vs {half} base"]["relative_diff"]
    check["tolerance"] = 2 * check["half_rounding"]
    check["within_tolerance"] = check["composition_error"] <= check["tolerance"]
    check["bare_relative_diff"] = context["bare bases, no adapter: fp32 vs NF4"]["relative_diff"]
    check["ratio_to_bare"] = check["relative_diff"] / check["bare_relative_diff"]
    check["batch"] = len(inputs)
    return check, context

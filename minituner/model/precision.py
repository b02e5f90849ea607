"""The frozen base's storage dtype (``base.dtype``): fp32, or a half-precision type for LoRA.

A half-precision base stores every parameter that exists before LoRA is injected (embedding /
LM head, position embedding, LayerNorms, biases, and the linears that are not quantized) in
bf16 or fp16, so activations run in that dtype too. Buffers are left alone: a quantized
linear's scales stay fp32. Adapters injected afterwards stay fp32 (PEFT's
``autocast_adapter_dtype`` convention) and ``LoRALinear`` casts their output back to the
activations' dtype, so nothing is promoted silently. Logits come out of MiniGPT as fp32.
"""

from __future__ import annotations

import torch
from torch import nn

BASE_DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def base_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (a key of ``BASE_DTYPES``).

    Raises:
        ValueError: ``name`` is not one of ``BASE_DTYPES``.
    """
    if name not in BASE_DTYPES:
        raise ValueError(f"base.dtype={name!r} is not allowed: must be one of {list(BASE_DTYPES)}")
    return BASE_DTYPES[name]


@torch.no_grad()
def cast_frozen_base(model: nn.Module, name: str) -> int:
    """Store every floating parameter of ``model`` (the base, before LoRA) in dtype ``name``.

    The tied embedding / LM head is one parameter and stays one. Buffers (quantization codes and
    scales) are not touched.

    Returns:
        The number of parameter elements cast.

    Raises:
        ValueError: ``name`` is not a known dtype.
    """
    dtype = base_dtype(name)
    cast = 0
    for param in model.parameters():  # distinct tensors: the tied head is cast once, and stays tied
        if param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.to(dtype)
        cast += param.numel()
    return cast

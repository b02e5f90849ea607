"""Measured memory: an exact ledger of the tensors a training run holds, and process figures.

The ledger walks the model's parameters and buffers, their gradients and the optimizer's
state, counting every tensor once (the tied embedding / LM head is one tensor), so its bytes
are exactly what those tensors occupy. Process figures (RSS, CUDA allocator) are what the
operating system and the allocator report, allocator overhead and activations included.
"""

from __future__ import annotations

import resource
import sys

import psutil
import torch
from torch import nn

from minituner.quant.linear import QuantizedLinear


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _dtype_name(tensor: torch.Tensor) -> str:
    return str(tensor.dtype).removeprefix("torch.")


def tensor_ledger(model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> dict:
    """Bytes of every tensor the model and optimizer hold, by role.

    Returns:
        ``frozen_by_dtype`` (frozen dense parameters), ``quantized_by_scheme`` (codes and
        scales of quantized linears), ``other_buffers``, ``trainable`` (parameters that train),
        ``grads``, ``optimizer_state``, ``trainable_params`` (a count), the buckets
        ``weights`` / ``grads`` / ``adam`` as the memory model names them, and ``total``.
    """
    frozen_by_dtype: dict[str, int] = {}
    quantized_by_scheme: dict[str, int] = {}
    seen: set[int] = set()
    trainable = grads = trainable_params = 0
    for param in model.parameters():  # distinct tensors: the tied head is listed once
        seen.add(id(param))
        if param.requires_grad:
            trainable += _nbytes(param)
            trainable_params += param.numel()
        else:
            frozen_by_dtype[_dtype_name(param)] = frozen_by_dtype.get(_dtype_name(param), 0) + _nbytes(param)
        if param.grad is not None:
            grads += _nbytes(param.grad)
    for module in model.modules():
        if isinstance(module, QuantizedLinear):
            for buffer in module.buffers(recurse=False):
                seen.add(id(buffer))
                quantized_by_scheme[module.scheme] = quantized_by_scheme.get(module.scheme, 0) + _nbytes(buffer)
    other_buffers = sum(_nbytes(b) for b in model.buffers() if id(b) not in seen)
    optimizer_state = 0
    if optimizer is not None:
        for state in optimizer.state.values():
            optimizer_state += sum(_nbytes(v) for v in state.values() if isinstance(v, torch.Tensor))
    weights = trainable + sum(frozen_by_dtype.values()) + sum(quantized_by_scheme.values()) + other_buffers
    return {
        "frozen_by_dtype": frozen_by_dtype,
        "quantized_by_scheme": quantized_by_scheme,
        "other_buffers": other_buffers,
        "trainable": trainable,
        "trainable_params": trainable_params,
        "weights": weights,
        "grads": grads,
        "adam": optimizer_state,
        "total": weights + grads + optimizer_state,
    }


def peak_rss_bytes() -> int:
    """The process's peak resident set size so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def process_memory() -> dict[str, int]:
    """RSS now and at its peak, and on CUDA the allocator's allocated / max allocated / reserved."""
    rss = psutil.Process().memory_info().rss
    # the kernel updates its high-water mark lazily, so it can briefly trail the current RSS
    figures = {"rss_bytes": rss, "peak_rss_bytes": max(peak_rss_bytes(), rss)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        figures |= {
            "cuda_allocated_bytes": torch.cuda.memory_allocated(),
            "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated(),
            "cuda_reserved_bytes": torch.cuda.memory_reserved(),
        }
    return figures

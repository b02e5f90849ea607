"""The fit solver: the largest batch and the longest sequence whose predicted step peak fits a memory size."""

from __future__ import annotations

from collections.abc import Callable

from minituner.memory.footprint import predict
from minituner.model.minigpt import MiniGPTConfig

BATCH_CEILING = 1 << 16  # the search stops here: no real batch is larger


def largest_fitting(peak_of: Callable[[int], int], memory_bytes: int, ceiling: int) -> int:
    """The largest ``n`` in ``1..ceiling`` with ``peak_of(n) <= memory_bytes`` (peaks grow with ``n``); 0 if none."""
    if peak_of(1) > memory_bytes:
        return 0
    low, high = 1, ceiling  # peak_of(low) fits; the answer lies in low..high
    while low < high:
        middle = (low + high + 1) // 2
        if peak_of(middle) <= memory_bytes:
            low = middle
        else:
            high = middle - 1
    return low


def fit_limits(config: MiniGPTConfig, memory_bytes: int, batch_size: int, seq_len: int, **settings) -> dict[str, int]:
    """How far one regime stretches within ``memory_bytes``, with and without activation checkpointing.

    Args:
        config: Model shape (its ``block_size`` caps the sequence length).
        memory_bytes: The device memory to fit.
        batch_size: The batch the longest sequence is searched at.
        seq_len: The sequence length the largest batch is searched at.
        settings: The regime's other ``predict`` arguments (lora, quant, precision, attention, device).

    Returns:
        ``max_batch`` / ``max_batch_checkpointed`` (sequences of ``seq_len``) and ``max_seq`` /
        ``max_seq_checkpointed`` (tokens, batches of ``batch_size``); 0 where nothing fits.
    """

    def largest(vary: str, key: str) -> int:
        def peak_at(n: int) -> int:
            batch, seq = (n, seq_len) if vary == "batch" else (batch_size, n)
            return getattr(predict(config, "fit", batch_size=batch, seq_len=seq, **settings), key)

        return largest_fitting(peak_at, memory_bytes, BATCH_CEILING if vary == "batch" else config.block_size)

    keys = {"": "peak", "_checkpointed": "peak_checkpointed"}
    return {f"max_{vary}{suffix}": largest(vary, key) for vary in ("batch", "seq") for suffix, key in keys.items()}

"""One quantized layer's forward + backward on the CPU: chunked, whole-weight, nn.Linear, bitsandbytes.

At 64x64, 768x3072, 4096x4096 and 4096x11008 (out x in), on 512 tokens (4 x 128) in fp32 with 2
threads, times (median of repeats, after a warm-up) the forward and the backward to the input of:
minituner's ``QuantizedLinear`` (NF4 + double quantization) with its default chunked path and with
the whole-weight reference path (``chunk_bytes=None``), an ``nn.Linear`` of the same shape (frozen
weight: only the input's gradient, as for a frozen base), and bitsandbytes's ``Linear4bit`` (NF4,
double quantization, blocks of 64) when installed. Transient memory is by construction: the dense
fp32 bytes dequantized at once (the whole weight, or the largest chunk). Prints JSON.
Goals (issue #21): within 1.5x of ``Linear4bit`` at 4096x4096; transient at most 1/8 of the dense weight.

    .venv/bin/python benchmarks/quant_layer.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json

import torch
from quant_throughput import median_seconds
from torch import nn
from train_throughput import linear4bit

from minituner.quant.linear import CHUNK_BYTES, QuantizedLinear

try:
    import bitsandbytes
except ImportError:  # optional reference
    bitsandbytes = None

SHAPES = ((64, 64), (768, 3072), (4096, 4096), (4096, 11008))
TOKENS = 512


def forward_backward_ms(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor, repeats: int) -> float:
    def once() -> None:
        layer(x.detach().requires_grad_(True)).backward(grad)

    return 1e3 * median_seconds(once, repeats)


def measure(out_features: int, in_features: int, repeats: int) -> dict:
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=False).requires_grad_(False)
    chunked = QuantizedLinear(linear, "nf4_dq")
    reference = QuantizedLinear(linear, "nf4_dq", chunk_bytes=None)
    x = torch.randn(TOKENS, in_features)
    grad = torch.randn(TOKENS, out_features)
    row = {
        "shape": [out_features, in_features],
        "chunked_ms": forward_backward_ms(chunked, x, grad, repeats),
        "whole_weight_ms": forward_backward_ms(reference, x, grad, repeats),
        "linear_ms": forward_backward_ms(linear, x, grad, repeats),
    }
    if bitsandbytes is not None:
        row["bnb_linear4bit_ms"] = forward_backward_ms(linear4bit(linear), x, grad, repeats)
        row["chunked_vs_bnb"] = row["chunked_ms"] / row["bnb_linear4bit_ms"]
    chunks = chunked.row_chunks(torch.device("cpu"))
    dense = 4 * out_features * in_features
    row["dense_weight_bytes"] = dense
    row["transient_bytes"] = dense if chunks is None else max(4 * (b - a) * in_features for a, b in chunks)
    row["transient_share"] = row["transient_bytes"] / dense
    row["chunked_vs_whole_weight"] = row["chunked_ms"] / row["whole_weight_ms"]
    row["chunked_vs_linear"] = row["chunked_ms"] / row["linear_ms"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [measure(o, i, args.repeats) for o, i in SHAPES]
    big = next(r for r in rows if r["shape"] == [4096, 4096])
    result = {
        "benchmark": "quant_layer",
        "threads": torch.get_num_threads(),
        "tokens": TOKENS,
        "chunk_bytes": CHUNK_BYTES,
        "bitsandbytes": getattr(bitsandbytes, "__version__", None),
        "layers": rows,
        "goals_4096x4096": {"transient_at_most_one_eighth": big["transient_share"] <= 1 / 8}
        | ({"within_1.5x_of_bnb": big["chunked_vs_bnb"] <= 1.5} if "chunked_vs_bnb" in big else {}),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""One quantized layer's forward + backward: chunked, whole-weight, nn.Linear, bitsandbytes.

At 64x64, 768x3072, 4096x4096 and 4096x11008 (out x in), on 512 tokens (4 x 128) in fp32 (and in
bf16, ``--dtypes``) with 2 threads, times (median of repeats, after a warm-up) the forward and the
backward to the input of: minituner's ``QuantizedLinear`` (NF4 + double quantization) with its
default chunked path and with the whole-weight reference path (``chunk_bytes=None``), an
``nn.Linear`` of the same shape (frozen weight: only the input's gradient, as for a frozen base),
and bitsandbytes's ``Linear4bit`` (NF4, double quantization, blocks of 64) when installed.

Transient memory is measured: the most bytes allocated at once during one forward + backward
(the profiler's allocation events on the CPU, the caching allocator's peak on CUDA) minus the same
for the ``nn.Linear``, whose dense weight already exists; the result is the quantized layer's own
working memory (the dequantized weight or chunk, and its index scratch). Prints JSON; ``--write``
also writes ``benchmarks/results/quant_layer.json`` (``quant_layer_cuda``) and the generated page.
Goals: within 1.5x of ``Linear4bit`` at 4096x4096; transient at most 1/8 of the dense weight.

    .venv/bin/python benchmarks/quant_layer.py [--repeats 7] [--dtypes float32 bfloat16] [--device cuda] [--write]
"""

from __future__ import annotations

import argparse
import json

import torch
from device import CPU, Device, add_device_argument
from result_files import markdown_table, write_results
from torch import nn
from train_throughput import linear4bit

from minituner.quant.linear import CHUNK_BYTES, QuantizedLinear

try:
    import bitsandbytes
except ImportError:  # optional reference
    bitsandbytes = None

SHAPES = ((64, 64), (768, 3072), (4096, 4096), (4096, 11008))
TOKENS = 512


def forward_backward(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    """One forward and the backward to the input (the layer's weight is frozen)."""

    def once() -> None:
        layer(x.detach().requires_grad_(True)).backward(grad)

    return once


def measure(
    out_features: int,
    in_features: int,
    repeats: int,
    dtype: torch.dtype = torch.float32,
    device: Device = CPU,
) -> dict:
    """One shape in one activation dtype: times in ms, transient bytes measured, ratios."""
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features, bias=False).requires_grad_(False)
    layers = {
        "chunked": QuantizedLinear(linear, "nf4_dq"),
        "whole_weight": QuantizedLinear(linear, "nf4_dq", chunk_bytes=None),
        "linear": linear,
    }
    if bitsandbytes is not None:
        layers["bnb_linear4bit"] = linear4bit(linear, device)
    layers = {name: layer.to(device.torch_device) for name, layer in layers.items()}
    layers["linear"].to(dtype)  # a dense layer in the activations' dtype; the quantized ones dequantize into it
    x = torch.randn(TOKENS, in_features).to(device.torch_device, dtype)
    grad = torch.randn(TOKENS, out_features).to(device.torch_device, dtype)
    row: dict = {"shape": [out_features, in_features], "dtype": str(dtype).removeprefix("torch.")}
    for name, layer in layers.items():
        row[f"{name}_ms"] = 1e3 * device.median_seconds(forward_backward(layer, x, grad), repeats)
    dense = 4 * out_features * in_features
    linear_peak = device.peak_allocated_bytes(forward_backward(layers["linear"], x, grad))
    for name in ("chunked", "whole_weight"):
        extra = device.peak_allocated_bytes(forward_backward(layers[name], x, grad)) - linear_peak
        row[f"{name}_transient_bytes"] = extra
        row[f"{name}_transient_share"] = extra / dense
    row["dense_fp32_weight_bytes"] = dense
    chunks = layers["chunked"].row_chunks(device.torch_device)
    row["chunk_rows"] = None if chunks is None else chunks[0][1]
    row["chunked_vs_whole_weight"] = row["chunked_ms"] / row["whole_weight_ms"]
    row["chunked_vs_linear"] = row["chunked_ms"] / row["linear_ms"]
    if "bnb_linear4bit_ms" in row:
        row["chunked_vs_bnb"] = row["chunked_ms"] / row["bnb_linear4bit_ms"]
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def report(result: dict) -> str:
    """One row per shape and dtype: the four layers' times, chunked / bnb and the transient share."""

    def share(row: dict, name: str) -> str:
        return f"{row[f'{name}_transient_share']:.3g}"

    rows = [
        [
            f"{row['shape'][0]} x {row['shape'][1]}, {row['dtype']}",
            f"{row['chunked_ms']:.1f} ms" + (" (whole)" if row["chunk_rows"] is None else ""),
            f"{row['whole_weight_ms']:.1f} ms",
            f"{row['linear_ms']:.1f} ms",
            f"{row['bnb_linear4bit_ms']:.1f} ms" if "bnb_linear4bit_ms" in row else "",
            f"{row['chunked_vs_bnb']:.2f}" if "chunked_vs_bnb" in row else "",
            f"{share(row, 'chunked')} ({share(row, 'whole_weight')})",
        ]
        for row in result["layers"]
    ]
    header = ["out x in, activations", "chunked", "whole weight", "`nn.Linear`", "bitsandbytes `Linear4bit`"]
    header += ["chunked / bnb", "transient / dense weight, chunked (whole)"]
    goals = ", ".join(f"{goal}: {'met' if met else 'not met'}" for goal, met in result["goals_4096x4096"].items())
    setting = (
        f"Forward + backward to the input on {result['tokens']} tokens, NF4-DQ, median of repeats; "
        f'bitsandbytes {result["bitsandbytes"]}. "(whole)": the layer is small enough to be dequantized whole.'
    )
    return f"{setting}\n\n{markdown_table(header, rows)}\n\nGoals at 4096 x 4096: {goals}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtypes", nargs="+", default=["float32"], choices=["float32", "bfloat16"])
    add_device_argument(parser)
    parser.add_argument("--write", action="store_true", help="write results/quant_layer.{json,md}")
    args = parser.parse_args()
    host = args.device.setup()
    rows = [measure(o, i, args.repeats, getattr(torch, d), args.device) for d in args.dtypes for o, i in SHAPES]
    big = next(r for r in rows if r["shape"] == [4096, 4096])
    result = {
        "benchmark": "quant_layer",
        "host": host,
        "tokens": TOKENS,
        "chunk_bytes": CHUNK_BYTES,
        "bitsandbytes": getattr(bitsandbytes, "__version__", None),
        "layers": rows,
        "goals_4096x4096": {"transient_at_most_one_eighth": big["chunked_transient_share"] <= 1 / 8}
        | ({"within_1.5x_of_bnb": big["chunked_vs_bnb"] <= 1.5} if "chunked_vs_bnb" in big else {}),
    }
    if args.write:
        name = "quant_layer_cuda" if args.device.is_cuda else "quant_layer"
        write_results(name, result, "One quantized layer: time and transient memory", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""NF4 quantize / dequantize throughput on CPU (or CUDA), against bitsandbytes's kernels.

For a 4096x4096 fp32 weight and for MiniGPT's two layer shapes (64x64, 256x64), times
minituner's NF4 quantize and dequantize (median of repeated runs, 2 threads on the CPU) and, when
bitsandbytes is installed, its ``quantize_4bit`` / ``dequantize_4bit`` with NF4 and blocks of
64 on the same tensor in the same process. Also reports the NF4 and int4 round-trip error on
normally distributed weights and the bits per weight measured on a quantized layer. Prints JSON;
``--write`` also writes ``benchmarks/results/quant_throughput.json`` (``quant_throughput_cuda``) and
the generated page. Goals: quantize at least as fast as bitsandbytes, dequantize within 1.5x of its
time. ``--device cuda``: the tensors on the GPU, timers synchronised with it.

    .venv/bin/python benchmarks/quant_throughput.py [--device cuda] [--write]
"""

from __future__ import annotations

import argparse
import json

import torch
from device import CPU, Device, add_device_argument
from result_files import markdown_table, write_results
from torch import nn

from minituner.quant.codecs import int4_dequantize, int4_quantize, nf4_dequantize, nf4_quantize
from minituner.quant.linear import QuantizedLinear
from minituner.quant.storage import storage_report

try:
    import bitsandbytes.functional as bnb
except ImportError:  # optional reference
    bnb = None


def measure(shape: tuple[int, int], repeats: int, device: Device = CPU) -> dict:
    weight = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device.torch_device) * 0.02
    packed, absmax = nf4_quantize(weight)
    timed = device.median_seconds
    row = {
        "shape": list(shape),
        "quantize_ms": 1e3 * timed(lambda: nf4_quantize(weight), repeats),
        "dequantize_ms": 1e3 * timed(lambda: nf4_dequantize(packed, absmax, weight.shape), repeats),
    }
    if bnb is not None:
        reference, state = bnb.quantize_4bit(weight, blocksize=64, quant_type="nf4")
        row["bnb_quantize_ms"] = 1e3 * timed(lambda: bnb.quantize_4bit(weight, blocksize=64, quant_type="nf4"), repeats)
        row["bnb_dequantize_ms"] = 1e3 * timed(lambda: bnb.dequantize_4bit(reference, state), repeats)
        row["quantize_ratio_vs_bnb"] = row["quantize_ms"] / row["bnb_quantize_ms"]
        row["dequantize_ratio_vs_bnb"] = row["dequantize_ms"] / row["bnb_dequantize_ms"]
        row["codes_identical_to_bnb"] = bool(torch.equal(packed, reference.view(-1)))
    row["weights_per_second_quantize"] = weight.numel() / (row["quantize_ms"] / 1e3)
    row["weights_per_second_dequantize"] = weight.numel() / (row["dequantize_ms"] / 1e3)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def round_trip_errors() -> dict:
    weight = torch.randn(4096, 4096, generator=torch.Generator().manual_seed(1)) * 0.02
    nf4 = nf4_dequantize(*nf4_quantize(weight), weight.shape)
    int4 = int4_dequantize(*int4_quantize(weight), weight.shape)
    return {
        "nf4_rmse": (nf4 - weight).pow(2).mean().sqrt().item(),
        "int4_rmse": (int4 - weight).pow(2).mean().sqrt().item(),
        "nf4_lower_than_int4": bool((nf4 - weight).pow(2).mean() < (int4 - weight).pow(2).mean()),
    }


def bits_per_weight() -> dict:
    rows = {}
    for scheme in ("nf4", "nf4_dq", "int4", "int8"):
        (row,) = storage_report(nn.ModuleDict({"w": QuantizedLinear(nn.Linear(4096, 4096), scheme)}))
        rows[scheme] = {"measured": row["bits_per_weight"], "formula": row["formula_bits_per_weight"]}
    return rows


def report(result: dict) -> str:
    """The codec's times against bitsandbytes's, the round-trip errors and the bits per weight."""

    def against(row: dict, step: str) -> list[str]:
        if f"bnb_{step}_ms" not in row:
            return [f"{row[f'{step}_ms']:.3g} ms", "", ""]
        ratio = row[f"{step}_ratio_vs_bnb"]
        return [f"{row[f'{step}_ms']:.3g} ms", f"{row[f'bnb_{step}_ms']:.3g} ms", f"**{ratio:.2f}x**"]

    rows = [
        [" x ".join(map(str, row["shape"])), *against(row, "quantize"), *against(row, "dequantize")]
        for row in result["layers"]
    ]
    header = ["fp32 weight", "NF4 quantize", "bitsandbytes", "ratio", "NF4 dequantize", "bitsandbytes", "ratio"]
    errors = result["round_trip_4096x4096"]
    bits = markdown_table(
        ["scheme", "bits per weight (measured)", "formula"],
        [
            [scheme, f"{b['measured']:.3f}", f"{b['formula']:.3f}"]
            for scheme, b in result["bits_per_weight_4096x4096"].items()
        ],
    )
    goals = ", ".join(f"{goal}: {'met' if met else 'not met'}" for goal, met in result.get("goals", {}).items())
    return (
        f"Medians of repeated runs, blocks of 64; bitsandbytes {result['bitsandbytes']} in the same process.\n\n"
        f"{markdown_table(header, rows)}\n\nGoals at 4096 x 4096: {goals or 'bitsandbytes not installed'}.\n\n"
        f"Round-trip RMSE on N(0, 0.02) 4096 x 4096 weights: NF4 {errors['nf4_rmse']:.5f}, "
        f"int4 {errors['int4_rmse']:.5f}.\n\n{bits}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_device_argument(parser)
    parser.add_argument("--write", action="store_true", help="write results/quant_throughput.{json,md}")
    args = parser.parse_args()
    device = args.device
    result = {
        "benchmark": "quant_throughput",
        "host": device.setup(),
        "bitsandbytes": getattr(bnb, "__name__", None) and __import__("bitsandbytes").__version__,
        "layers": [measure((4096, 4096), 15, device), measure((64, 64), 200, device), measure((256, 64), 200, device)],
        "round_trip_4096x4096": round_trip_errors(),
        "bits_per_weight_4096x4096": bits_per_weight(),
    }
    big = result["layers"][0]
    if bnb is not None:
        result["goals"] = {
            "quantize_at_least_as_fast_as_bnb": big["quantize_ratio_vs_bnb"] <= 1.0,
            "dequantize_within_1.5x_of_bnb": big["dequantize_ratio_vs_bnb"] <= 1.5,
        }
    if args.write:
        name = "quant_throughput_cuda" if device.is_cuda else "quant_throughput"
        write_results(name, result, "NF4 codec throughput against bitsandbytes", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

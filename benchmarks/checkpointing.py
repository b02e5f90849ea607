"""What activation checkpointing costs and saves: step time and peak memory with and without it.

For full fine-tuning, LoRA and QLoRA at the default MiniGPT (its real batch, 32 x 64) and at the
~25M ``w512`` shape of ``scaling.py`` (4 x 128), one process each way: the median step time of the
plain training loop, the measured peak of a step (the profiler's allocation events on the CPU) and
the predicted one, and the saved activations measured and predicted. The ratios checkpointed /
plain are measured in the same run. Writes ``benchmarks/results/checkpointing.json`` and the
generated ``checkpointing.md``.

    .venv/bin/python benchmarks/checkpointing.py [--steps 5] [--device cuda]
"""

from __future__ import annotations

import argparse

from device import add_device_argument
from result_files import markdown_table, write_results
from scaling import REGIMES, measure
from train_throughput import shape

from minituner.model.minigpt import MiniGPTConfig

MIB = 2**20
SHAPES = {
    "minigpt": (shape("minigpt"), (32, 64)),
    "w512": (MiniGPTConfig(n_layer=8, n_head=8, d_model=512, d_ff=2048, block_size=128), (4, 128)),
}


def run(steps: int, device) -> dict:
    """Both settings for every shape and regime, with the ratios checkpointed / plain."""
    rows = {}
    for name, (config, batch) in SHAPES.items():
        for regime in REGIMES:
            plain = measure(config, regime, batch, steps, device)
            checkpointed = measure(config, regime, batch, steps, device, checkpointing=True)
            rows[f"{name}/{regime}"] = {
                "plain": plain,
                "checkpointed": checkpointed,
                "time_ratio": round(checkpointed["median_step_s"] / plain["median_step_s"], 3),
                "peak_ratio": round(checkpointed["peak_memory_bytes"] / plain["peak_memory_bytes"], 3),
            }
    return {"steps": steps, "rows": rows}


def report(result: dict) -> str:
    """The generated markdown table."""
    rows = []
    for key, row in result["rows"].items():
        plain, ckpt = row["plain"], row["checkpointed"]
        rows.append(
            [
                key,
                f"{plain['median_step_s'] * 1000:.1f} -> {ckpt['median_step_s'] * 1000:.1f}",
                f"{row['time_ratio']:.2f}",
                f"{plain['saved_activations_bytes'] / MIB:.2f} -> {ckpt['saved_activations_bytes'] / MIB:.2f}",
                f"{plain['peak_memory_bytes'] / MIB:.1f} -> {ckpt['peak_memory_bytes'] / MIB:.1f}",
                f"{row['peak_ratio']:.2f}",
                f"{plain['predicted_peak_ratio']:.3f} / {ckpt['predicted_peak_ratio']:.3f}",
            ]
        )
    header = [
        "shape/regime",
        "step ms (plain -> checkpointed)",
        "time ratio",
        "saved activations MiB",
        "peak MiB",
        "peak ratio",
        "predicted / measured peak (plain / ckpt)",
    ]
    return (
        f"Median of {result['steps']} steps each; saved activations measured through `saved_tensors_hooks` "
        "(equal to the prediction in every row).\n\n" + markdown_table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after one warm-up)")
    add_device_argument(parser)
    args = parser.parse_args()
    args.device.setup()
    result = run(args.steps, args.device)
    for row in result["rows"].values():
        for setting in ("plain", "checkpointed"):
            assert row[setting]["saved_activations_bytes"] == row[setting]["predicted_activations_bytes"]
    name = "checkpointing" if not args.device.is_cuda else "checkpointing_cuda"
    write_results(name, result, "Activation checkpointing: time and memory", report(result))
    print(report(result))


if __name__ == "__main__":
    main()

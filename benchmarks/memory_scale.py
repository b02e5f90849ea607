"""Training memory of the ~100M preset on CPU: full fine-tuning, LoRA and QLoRA (fp32 and bf16 bases). Prints JSON.

Each regime runs in its own process (so RSS belongs to it alone): build the preset from random
weights (``conf/model/minigpt_100m.yaml``), quantize the base to NF4 + double quantization for
QLoRA, store the rest of the frozen base in bf16 for the ``_bf16`` rows, inject the default LoRA
(r=8 on the MLP linears), run two AdamW training steps on a
batch of 4 x 128 tokens, then read the exact tensor ledger (weights / grads / Adam bytes) and
the peak RSS, beside the memory calculator's prediction for the same config. Goals: QLoRA's
peak clearly below LoRA's; measured tensor bytes within 2% of the prediction for every regime.
Prints JSON and draws ``benchmarks/figures/memory_scale_100m.png``; ``--write`` also writes
``benchmarks/results/memory_scale_100m.json`` and the generated ``memory_scale_100m.md``.

    .venv/bin/python benchmarks/memory_scale.py [--write]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch
from device import CPU
from matplotlib.figure import Figure
from result_files import markdown_table, write_results
from train_throughput import BATCHES, LORA, build, fixed_batch, optimizer_for, shape

from minituner.memory.footprint import predict
from minituner.memory.ledger import process_memory, tensor_ledger

MODEL = "minigpt_100m"
REGIMES = ("full", "lora", "qlora", "lora_bf16", "qlora_bf16")
BUCKETS = ("weights", "grads", "adam")
FIGURE = Path(__file__).parent / "figures" / "memory_scale_100m.png"
MIB = 2**20


def child(regime: str) -> dict:
    """Measure one regime in this process."""
    torch.set_num_threads(2)
    config = shape(MODEL)
    batch_size, seq = BATCHES[MODEL]
    before = process_memory()["rss_bytes"]
    model = build(config, regime, CPU)
    batch = fixed_batch(batch_size, seq, CPU)
    optimizer = optimizer_for(model)
    for _ in range(2):  # Adam's moments exist after the first step; the allocator settles by the second
        _, loss = model(batch["input_ids"], batch["targets"])
        loss.backward()
        optimizer.step()
    measured = tensor_ledger(model, optimizer)  # gradients kept: the peak of a step holds them
    memory = process_memory()
    predicted = predict(
        config,
        regime,
        lora=None if regime == "full" else LORA,
        quant="nf4_dq" if regime.startswith("qlora") else "none",
        precision="fp32",
        batch_size=batch_size,
        seq_len=seq,
        base_dtype="bfloat16" if regime.endswith("_bf16") else "float32",
    ).to_dict()
    tensors = {b: measured[b] for b in BUCKETS}
    return {
        "regime": regime,
        "trainable_params": measured["trainable_params"],
        "measured": tensors | {"total": sum(tensors.values())},
        "predicted": {b: predicted[b] for b in (*BUCKETS, "activations")}
        | {"total": sum(predicted[b] for b in BUCKETS)},
        "rss_before_build_bytes": before,
        "peak_rss_bytes": memory["peak_rss_bytes"],
    }


def table(rows: list[dict]) -> str:
    """Measured tensor bytes per bucket beside the prediction, and the peak RSS, one row per regime."""
    header = ["regime", "trainable", "weights MiB", "grads MiB", "Adam MiB", "tensors MiB (predicted)", "error"]
    cells = []
    for row in rows:
        m, p = row["measured"], row["predicted"]
        cells.append(
            [row["regime"], f"{row['trainable_params']:,}"]
            + [f"{m[bucket] / MIB:.1f}" for bucket in BUCKETS]
            + [f"{m['total'] / MIB:.1f} ({p['total'] / MIB:.1f})", f"{row['error']:+.3%}"]
        )
        cells[-1].append(f"{row['peak_rss_bytes'] / MIB:.0f}")
    return markdown_table([*header, "peak RSS MiB"], cells)


def plot(rows: list[dict]) -> None:
    figure = Figure(figsize=(9, 4.5))
    axes = figure.subplots()
    labels = [r["regime"] for r in rows]
    bottoms = [0.0] * len(rows)
    for bucket in BUCKETS:
        values = [r["measured"][bucket] / MIB for r in rows]
        axes.bar(labels, values, bottom=bottoms, width=0.5, label=f"{bucket} (ledger)")
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.plot(labels, [r["peak_rss_bytes"] / MIB for r in rows], "kD", label="peak RSS")
    axes.plot(labels, [r["predicted"]["total"] / MIB for r in rows], "r_", markersize=40, label="predicted tensors")
    axes.set_ylabel("MiB")
    axes.set_title(f"{MODEL}: tensors after two AdamW steps, peak RSS (CPU; _bf16: bf16 frozen base)", fontsize=10)
    axes.legend()
    figure.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    figure.savefig(FIGURE, format="png", dpi=110)


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write results/memory_scale_100m.{json,md}")
    args = parser.parse_args()
    rows = []
    for regime in REGIMES:
        done = subprocess.run([sys.executable, __file__, "--child", regime], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["error"] = row["measured"]["total"] / row["predicted"]["total"] - 1
        rows.append(row)
    by_regime = {r["regime"]: r for r in rows}
    plot(rows)
    result = {
        "model": MODEL,
        "batch": dict(zip(("sequences", "tokens_per_sequence"), BATCHES[MODEL], strict=True)),
        "regimes": rows,
        "qlora_vs_lora_peak_rss": round(by_regime["qlora"]["peak_rss_bytes"] / by_regime["lora"]["peak_rss_bytes"], 3),
        "max_abs_tensor_error": max(abs(r["error"]) for r in rows),
        "figure": str(FIGURE.relative_to(FIGURE.parents[2])),
    }
    if args.write:
        sequences, tokens = BATCHES[MODEL]
        body = (
            f"`{MODEL}` from random weights, two AdamW steps on {sequences} x {tokens} tokens, each regime in its own"
            " process; `_bf16`: the frozen base but the NF4 codes and scales stored in bf16.\n\n"
            f"{table(rows)}\n\nQLoRA / LoRA peak RSS: {result['qlora_vs_lora_peak_rss']}; largest tensor-byte"
            f" error against the prediction: {result['max_abs_tensor_error']:.3%}.\n\n"
            "![ledger and peak RSS](../figures/memory_scale_100m.png)"
        )
        write_results("memory_scale_100m", result, "Training memory at ~100M parameters", body)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Training memory of the ~100M preset on CPU: full fine-tuning, LoRA and QLoRA (fp32 and bf16 bases). Prints JSON.

Each regime runs in its own process (so RSS belongs to it alone): build the preset from random
weights (``conf/model/minigpt_100m.yaml``), quantize the base to NF4 + double quantization for
QLoRA, store the rest of the frozen base in bf16 for the ``_bf16`` rows, inject the default LoRA
(r=8 on the MLP linears), run two AdamW training steps on a
batch of 4 x 128 tokens, then read the exact tensor ledger (weights / grads / Adam bytes) and
the peak RSS, beside the memory calculator's prediction for the same config. Goals: QLoRA's
peak clearly below LoRA's; measured tensor bytes within 2% of the prediction for every regime.
Writes the table to stdout (JSON) and the bar chart to ``benchmarks/figures/memory_scale_100m.png``.

    .venv/bin/python benchmarks/memory_scale.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from device import CPU
from matplotlib.figure import Figure
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
    lines = [
        "| regime | trainable | weights MiB | grads MiB | Adam MiB | tensors MiB (predicted) | error | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, p = row["measured"], row["predicted"]
        lines.append(
            f"| {row['regime']} | {row['trainable_params']:,} | {m['weights'] / MIB:.1f} | {m['grads'] / MIB:.1f} | "
            f"{m['adam'] / MIB:.1f} | {m['total'] / MIB:.1f} ({p['total'] / MIB:.1f}) | {row['error']:+.3%} | "
            f"{row['peak_rss_bytes'] / MIB:.0f} |"
        )
    return "\n".join(lines)


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
    rows = []
    for regime in REGIMES:
        done = subprocess.run([sys.executable, __file__, "--child", regime], capture_output=True, text=True, check=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        row["error"] = row["measured"]["total"] / row["predicted"]["total"] - 1
        rows.append(row)
    by_regime = {r["regime"]: r for r in rows}
    plot(rows)
    print(
        json.dumps(
            {
                "model": MODEL,
                "batch": dict(zip(("sequences", "tokens_per_sequence"), BATCHES[MODEL], strict=True)),
                "regimes": rows,
                "qlora_vs_lora_peak_rss": round(
                    by_regime["qlora"]["peak_rss_bytes"] / by_regime["lora"]["peak_rss_bytes"], 3
                ),
                "max_abs_tensor_error": max(abs(r["error"]) for r in rows),
                "table": table(rows),
                "figure": str(FIGURE),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

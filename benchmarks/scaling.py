"""How training cost grows: full fine-tuning, LoRA and QLoRA over model size and sequence length.

Over a ladder of MiniGPT shapes (the ``tiny`` and ``minigpt`` presets, two widths between them
and the ~100M preset on the CPU; the ~1B preset too with ``--device cuda``) at 4 x 128 tokens,
and over sequence lengths 64..512 at one fixed shape (``w512``, ~25M parameters), measures per
regime in one process: the median step time of the plain training loop (train_throughput.py's:
forward, backward, clip, AdamW), tokens per second, and the peak memory of a step: the bytes the
model and optimizer hold before it (the exact tensor ledger) plus the most allocated at once
during it (the profiler's allocation events on the CPU; ``torch.cuda.max_memory_allocated`` on
CUDA). Beside each measurement the memory calculator's prediction for the same config
(``minituner.memory.footprint.predict``): the predicted step peak (``minituner.memory.peak``)
and its ratio to the measured one, the saved activations counted from the architecture and
measured through ``saved_tensors_hooks`` (equal on the CPU), the seeds' rule of thumb (16 bytes
per residual value per layer) and what the step's peak holds beyond weights, gradients and Adam,
per residual value per layer.

Fits the exponents (least squares on log-log: cost ~ parameters^k, over the shapes of at least
1M parameters, where compute rather than per-operation overhead dominates; cost ~ tokens^k over
the sequence lengths) and draws ``benchmarks/figures/scaling.png``. Prints JSON; with ``--write``
also writes ``benchmarks/results/scaling.json`` and the generated ``scaling.md``.

    .venv/bin/python benchmarks/scaling.py [--steps 3] [--device cuda] [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
from pathlib import Path

from device import Device, add_device_argument
from matplotlib.figure import Figure
from result_files import markdown_table, write_results
from train_throughput import LORA, build, fixed_batch, optimizer_for, plain_loop, shape, training_step

from minituner.memory.footprint import predict
from minituner.memory.ledger import tensor_ledger
from minituner.memory.saved_tensors import SavedTensorMeter
from minituner.model.minigpt import MiniGPTConfig, count_parameters

REGIMES = ("full", "lora", "qlora")
BATCH = (4, 128)
SEQ_LENGTHS = (64, 128, 256, 512)
FIT_ABOVE = 1_000_000  # parameters: smaller shapes are dominated by per-operation overhead
FIGURE = Path(__file__).parent / "figures" / "scaling.png"
MIB = 2**20


def ladder(device: Device) -> dict[str, MiniGPTConfig]:
    """The shapes measured, smallest first (each with room for the longest sequence measured)."""
    between = {
        "w256": MiniGPTConfig(n_layer=4, n_head=4, d_model=256, d_ff=1024),
        "w512": MiniGPTConfig(n_layer=8, n_head=8, d_model=512, d_ff=2048),
    }
    shapes = {"tiny": shape("tiny"), "minigpt": shape("minigpt"), **between, "minigpt_100m": shape("minigpt_100m")}
    if device.is_cuda:
        shapes["minigpt_1b"] = shape("minigpt_1b")
    room = max(*SEQ_LENGTHS, BATCH[1])
    return {name: dataclasses.replace(config, block_size=room) for name, config in shapes.items()}


def measure(
    config: MiniGPTConfig,
    regime: str,
    batch_shape: tuple[int, int],
    steps: int,
    device: Device,
    checkpointing: bool = False,
) -> dict:
    """Step time, tokens/s and peak memory of one (shape, regime, batch), with the calculator's prediction."""
    batch_size, seq = batch_shape
    model = build(config, regime, device)
    model.activation_checkpointing = checkpointing
    batch = fixed_batch(batch_size, seq, device)
    times = plain_loop(model, batch, 1, steps, device)
    optimizer = optimizer_for(model)

    def step() -> None:
        training_step(model, optimizer, lambda: model(batch["input_ids"], batch["targets"])[1], device)

    step()  # Adam's moments exist from the first step on
    with device.autocast(), SavedTensorMeter(model) as meter:
        loss = model(batch["input_ids"], batch["targets"])[1]
    saved = meter.bytes
    del loss
    held = tensor_ledger(model, optimizer)
    if device.is_cuda:
        device.reset_peak_memory()
        step()
        peak = device.peak_memory_bytes()
    else:
        peak = held["weights"] + held["grads"] + held["adam"] + device.peak_allocated_bytes(step)
    predicted = predict(
        config,
        regime,
        lora=None if regime == "full" else LORA,
        quant="nf4_dq" if regime == "qlora" else "none",
        batch_size=batch_size,
        seq_len=seq,
        device="cuda" if device.is_cuda else "cpu",
    )
    predicted_peak = predicted.peak_checkpointed if checkpointing else predicted.peak
    median = statistics.median(times)
    exact = predicted.total - predicted.activations  # weights, gradients and Adam: the ledger matches these
    per_value = batch_size * seq * config.d_model * config.n_layer  # residual values over all layers
    return {
        "median_step_s": round(median, 5),
        "tokens_per_s": round(batch_size * seq / median, 1),
        "peak_memory_bytes": peak,
        "predicted_peak_bytes": predicted_peak,
        "predicted_peak_ratio": round(predicted_peak / peak, 4),
        "saved_activations_bytes": saved,
        "predicted_activations_bytes": predicted.activations_checkpointed if checkpointing else predicted.activations,
        "rule_of_thumb_activations_bytes": predicted.rule_of_thumb_activations,
        "predicted_bytes": predicted.total,
        "predicted_without_activations_bytes": exact,
        "peak_beyond_exact_bytes_per_value": round((peak - exact) / per_value, 1),
    }


def exponent(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) on log(x) (None with fewer than two points)."""
    if len(xs) < 2:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return round(sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum((a - mx) ** 2 for a in lx), 3)


def fits(rows: dict, xs: dict[str, float], keep) -> dict:
    """Per regime: exponents of step time, tokens/s and peak memory against ``xs`` (rows passing ``keep``)."""
    result = {}
    for regime in REGIMES:
        names = [n for n in rows if keep(n)]
        x = [xs[n] for n in names]
        result[regime] = {
            "step_time": exponent(x, [rows[n][regime]["median_step_s"] for n in names]),
            "peak_memory": exponent(x, [rows[n][regime]["peak_memory_bytes"] for n in names]),
            "predicted_memory": exponent(x, [rows[n][regime]["predicted_peak_bytes"] for n in names]),
        }
    return result


def draw(result: dict, path: Path) -> None:
    """Four log-log panels: time and memory against parameters, and against sequence length."""
    figure = Figure(figsize=(11, 8), layout="constrained")
    axes = figure.subplots(2, 2)
    colours = {"full": "tab:red", "lora": "tab:blue", "qlora": "tab:green"}
    for row, (sweep, xs, label) in enumerate(
        [("sizes", result["parameters"], "parameters"), ("seq_lengths", result["tokens"], "tokens per sequence")]
    ):
        rows = result[sweep]
        names = list(rows)
        for regime, colour in colours.items():
            x = [xs[n] for n in names]
            axes[row][0].plot(x, [rows[n][regime]["median_step_s"] for n in names], "o-", color=colour, label=regime)
            axes[row][1].plot(
                x,
                [rows[n][regime]["peak_memory_bytes"] / 2**20 for n in names],
                "o-",
                color=colour,
                label=f"{regime} measured",
            )
            axes[row][1].plot(
                x,
                [rows[n][regime]["predicted_peak_bytes"] / 2**20 for n in names],
                "x--",
                color=colour,
                alpha=0.7,
                label=f"{regime} predicted peak",
            )
        for column, ylabel in enumerate(("median step time (s)", "peak memory of a step (MiB)")):
            axes[row][column].set(xscale="log", yscale="log", xlabel=label, ylabel=ylabel)
            axes[row][column].grid(True, which="both", alpha=0.3)
            axes[row][column].legend(fontsize=7)
    size_fit, seq_fit = result["fits"]["sizes"], result["fits"]["seq_lengths"]
    axes[0][0].set_title("step time vs size (k: " + ", ".join(f"{r} {size_fit[r]['step_time']}" for r in REGIMES) + ")")
    axes[0][1].set_title("memory vs size (k: " + ", ".join(f"{r} {size_fit[r]['peak_memory']}" for r in REGIMES) + ")")
    axes[1][0].set_title(
        f"step time vs length at {result['seq_shape']} (k: "
        + ", ".join(f"{r} {seq_fit[r]['step_time']}" for r in REGIMES)
        + ")"
    )
    axes[1][1].set_title(f"memory vs length at {result['seq_shape']}")
    figure.suptitle(f"training cost, batch {BATCH[0]} sequences, {result['host']['device']}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def run(steps: int, device: Device, sizes: list[str] | None = None, seq_shape: str = "w512") -> dict:
    """Both sweeps; returns the JSON-ready result (``sizes``: a subset of the ladder's names)."""
    shapes = ladder(device)
    chosen = {n: c for n, c in shapes.items() if sizes is None or n in sizes}
    size_rows = {n: {r: measure(c, r, BATCH, steps, device) for r in REGIMES} for n, c in chosen.items()}
    seq_rows = {
        str(seq): {r: measure(shapes[seq_shape], r, (BATCH[0], seq), steps, device) for r in REGIMES}
        for seq in SEQ_LENGTHS
    }
    counts = {n: count_parameters(c) for n, c in chosen.items()}
    lengths = {str(seq): float(seq) for seq in SEQ_LENGTHS}
    return {
        "batch": {"sequences": BATCH[0], "tokens_per_sequence": BATCH[1]},
        "steps": steps,
        "parameters": counts,
        "tokens": lengths,
        "seq_shape": seq_shape,
        "sizes": size_rows,
        "seq_lengths": seq_rows,
        "fits": {
            "sizes": fits(size_rows, counts, lambda n: counts[n] >= FIT_ABOVE),
            "sizes_fit_over": [n for n in chosen if counts[n] >= FIT_ABOVE],
            "seq_lengths": fits(seq_rows, lengths, lambda n: True),
        },
    }


def report(result: dict) -> str:
    """The generated markdown: per shape and regime, measured against predicted peak and activations."""
    rows = []
    for sweep, label in (("sizes", "{}"), ("seq_lengths", f"{result['seq_shape']} at {{}} tokens")):
        for name, regimes in result[sweep].items():
            for regime, row in regimes.items():
                rows.append(
                    [
                        label.format(name),
                        regime,
                        f"{row['peak_memory_bytes'] / MIB:.1f}",
                        f"{row['predicted_peak_bytes'] / MIB:.1f}",
                        f"{row['predicted_peak_ratio']:.3f}",
                        f"{row['saved_activations_bytes'] / MIB:.2f}",
                        f"{row['predicted_activations_bytes'] / MIB:.2f}",
                        f"{row['rule_of_thumb_activations_bytes'] / MIB:.2f}",
                    ]
                )
    ratios = [row[4] for row in rows]
    header = [
        "shape",
        "regime",
        "peak MiB (measured)",
        "peak MiB (predicted)",
        "predicted / measured",
        "saved activations MiB (measured)",
        "(predicted)",
        "rule of thumb MiB",
    ]
    fits = result["fits"]
    exponents = [
        [what, *(fits[sweep][regime][key] for regime in REGIMES)]
        for what, sweep, key in (
            (f"step time vs parameters ({', '.join(fits['sizes_fit_over'])})", "sizes", "step_time"),
            ("peak memory vs parameters, measured", "sizes", "peak_memory"),
            ("peak memory vs parameters, predicted", "sizes", "predicted_memory"),
            (f"step time vs tokens per sequence (at {result['seq_shape']})", "seq_lengths", "step_time"),
            ("peak memory vs tokens per sequence, measured", "seq_lengths", "peak_memory"),
            ("peak memory vs tokens per sequence, predicted", "seq_lengths", "predicted_memory"),
        )
    ]
    return (
        f"Batch {result['batch']['sequences']} sequences; peak = what the step holds before it plus the most "
        f"allocated at once during it. Predicted / measured peak ranges over {min(ratios)}..{max(ratios)}.\n\n"
        + markdown_table(header, rows)
        + "\n\nExponents k of cost ~ x^k (least squares on log-log):\n\n"
        + markdown_table(["exponent", *REGIMES], exponents)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/scaling.json and .md")
    add_device_argument(parser)
    args = parser.parse_args()
    host = args.device.setup()
    result = {"benchmark": "scaling", "host": host} | run(args.steps, args.device)
    draw(result, FIGURE)
    if args.write:
        name = "scaling" if not args.device.is_cuda else "scaling_cuda"
        write_results(name, result, "Training cost and memory against model size and sequence length", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""minituner's predicted step peak against published peak-memory measurements of LoRA and QLoRA at 7B.

Each row is a published measurement whose source states enough of its config to recompute it: the
model, the precision, the adapted modules and rank, the batch and the sequence length. The same
arithmetic as ``minituner-count`` (``minituner.memory.footprint.predict``) gives the predicted peak
of a training step for that config; the table shows both, the ratio, and the equivalent
``minituner-count`` command. Sources that do not state enough are listed with what is missing.
Writes ``benchmarks/results/published_memory.json`` and the generated ``published_memory.md``.

    .venv/bin/python benchmarks/published_memory.py
"""

from __future__ import annotations

from result_files import markdown_table, write_results

from minituner.config.nodes import model_preset
from minituner.lora.inject import LoRAConfig
from minituner.memory.footprint import predict

GB = 10**9  # the sources print torch.cuda.max_memory_allocated() / 1e9
BOUND = 0.15  # the goal: within 15% of the published figure
LITGPT = (
    "LitGPT tutorials/resource-tables.md (commit 8641822, 2023-10-20): `finetune/lora.py`, 1 x A100-SXM4-40GB, "
    "`--precision bf16-true`, LoRA r=8 alpha=16 dropout=0.05 on query and value, Alpaca (longest example "
    "1304 tokens with Llama 2's tokenizer), max_memory_allocated"
)
# (label, model preset, quant, micro-batch, tokens, published GB or None for out of memory on a 40 GB card)
LITGPT_ROWS = [
    ("Llama 2 7B LoRA, micro-batch 1", "llama2_7b", "none", 1, 1304, 21.30),
    ("Llama 2 7B LoRA, micro-batch 2", "llama2_7b", "none", 2, 1304, 29.07),
    ("Llama 2 7B LoRA, micro-batch 4", "llama2_7b", "none", 4, 1304, None),
    ("Llama 2 7B QLoRA (bnb.nf4), micro-batch 1", "llama2_7b", "nf4", 1, 1304, 14.14),
    ("Llama 2 7B QLoRA (bnb.nf4-dq), micro-batch 1", "llama2_7b", "nf4_dq", 1, 1304, 13.84),
]
A100_40GB = 40 * 2**30
NOT_RECOMPUTABLE = [
    (
        "torchtune README (2024): Llama2-7B LoRA 17.18 GB, QLoRA 9.29 GB, LoRA on 2 GPUs 14.17 GB",
        "`torch.cuda.max_memory_reserved()` (the allocator's cache, not allocated tensors), estimated on A100s "
        "with a memory fraction; the sequence lengths are those of Alpaca batches (not stated), so the peak "
        "batch is unknown",
    ),
    (
        "QLoRA paper (Dettmers et al. 2023): 65B in < 48 GB, 7B on consumer GPUs",
        "totals without the batch and sequence length of the measured step and with paged optimizers",
    ),
]


def litgpt_row(label: str, preset: str, quant: str, batch: int, tokens: int, published: float | None) -> dict:
    """One LitGPT measurement and minituner's prediction for its config."""
    lora = LoRAConfig(r=8, alpha=16, dropout=0.05, target_modules="attn_qv")
    predicted = predict(
        model_preset(preset),
        label,
        lora=lora,
        quant=quant,
        precision="bf16_true",
        batch_size=batch,
        seq_len=tokens,
        device="cuda",
    )
    command = (
        f"minituner-count model={preset} count.precision=bf16_true count.target_modules=attn_qv count.ranks=[8] "
        f"count.qlora_quant={'nf4_dq' if quant == 'none' else quant} count.batch_size={batch} count.seq_len={tokens}"
    )
    row = {"label": label, "published_gb": published, "predicted_gb": round(predicted.peak / GB, 2), "command": command}
    if published is None:  # the source reports out of memory on its 40 GB card
        row["predicted_fits_40gb"] = predicted.peak <= A100_40GB
    else:
        row["ratio"] = round(predicted.peak / (published * GB), 3)
        row["within_15_percent"] = abs(row["ratio"] - 1) <= BOUND
    return row


def report(result: dict) -> str:
    """The generated markdown: the comparison table, then the sources that cannot be recomputed."""
    rows = []
    for row in result["litgpt"]:
        published = "out of memory (40 GB)" if row["published_gb"] is None else f"{row['published_gb']:.2f}"
        verdict = (
            f"{row['ratio']:.3f} ({'within' if row['within_15_percent'] else 'outside'} 15%)"
            if "ratio" in row
            else f"predicted {'fits' if row['predicted_fits_40gb'] else 'does not fit'} 40 GiB"
        )
        rows.append([row["label"], published, f"{row['predicted_gb']:.2f}", verdict])
    missing = "\n".join(f"- {source}: {why}." for source, why in result["not_recomputable"])
    return (
        f"Source: {LITGPT}.\n\n"
        + markdown_table(["config", "published GB", "predicted peak GB", "predicted / published"], rows)
        + "\n\nEach row is `minituner-count` with the same config, e.g. `"
        + result["litgpt"][0]["command"]
        + "`.\n\nThe LoRA rows are predicted 6-9% low (LitGPT's rotary caches and allocator rounding are not "
        "counted); at micro-batch 4 the prediction, 39.2 GB, is within that margin of the card's 40 GiB, where "
        "LitGPT ran out of memory. The QLoRA rows are not reproduced: both published figures sit near the 16-bit "
        "weights' size (13.5 GB) although the 4-bit weights are 3.9-4.2 GB and the same table's QLoRA-free "
        "inference rows need 4.3-4.6 GB, so the maximum LitGPT reports most likely comes from loading the 16-bit "
        "checkpoint before quantizing it, not from a training step. bitsandbytes also keeps the input of each "
        "quantized linear for backward, which minituner's quantized layer does not (about 1.3 GB here).\n\n"
        f"Not recomputable:\n{missing}\n"
    )


def main() -> None:
    result = {
        "litgpt": [litgpt_row(*row) for row in LITGPT_ROWS],
        "not_recomputable": NOT_RECOMPUTABLE,
        "bound": BOUND,
    }
    write_results("published_memory", result, "Predicted step peaks against published 7B measurements", report(result))
    print(report(result))


if __name__ == "__main__":
    main()

"""How far NF4 moves a MiniGPT's logits, against layer width: why the tiny model is noisier.

The preview's part B compares logits of one adapter on a full-precision and on an NF4 base; the
bare bases alone already differ by a few percent at MiniGPT's width (64), where the seeds expect
1-3%. This benchmark measures that bare-base error, the mean |logit fp32 - logit NF4| over the
scored positions of the preview's fixed batch relative to the mean |logit| (part B's measure),
for bases of widths 64 to 768 (4 layers, 4 heads, d_ff = 4 d): freshly initialised, and briefly
pretrained on the verb corpus (the same steps at every width). Beside it, the per-weight NF4
error of the quantized linears (||W - deq(Q(W))|| / ||W||, averaged over the layers).
The default base (width 64, fully pretrained; the shipped one) is the reference row when it is
in the cache (``outputs/bases``).

Writes ``benchmarks/results/nf4_width.json`` and ``.md`` and ``benchmarks/figures/nf4_width.png``.

    .venv/bin/python benchmarks/nf4_width.py [--steps 200] [--batch-size 16] [--widths 64 128 256 512 768]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from matplotlib.figure import Figure
from result_files import markdown_table, write_results

from minituner.config.base_request import base_dir_for
from minituner.config.shipped import CONF_DIR
from minituner.model.minigpt import IGNORE_INDEX, MiniGPT, MiniGPTConfig
from minituner.quant.linear import QuantizedLinear, quantize_model
from minituner.reports.merge_fidelity import compare_logits, logits_of
from minituner.store.base_cache import load_base

FIGURE = Path(__file__).parent / "figures" / "nf4_width.png"
SCHEME = "nf4_dq"


def preview_config():
    """The preview's default config (its data and batch)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="preview")


def fixed_batch(cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """The preview's fixed batch: the first ``preview.batch_size`` irregular-test sentences, scored positions."""
    size = cfg.preview.batch_size
    batch = next(iter(instantiate(cfg.data, stage="irregular").test_dataloader()[0]))
    return batch["input_ids"][:size], batch["targets"][:size] != IGNORE_INDEX


def pretrain(model: MiniGPT, cfg, steps: int, batch_size: int) -> None:
    """A few hundred AdamW steps on the pretraining corpus, the same at every width."""
    loader = instantiate(cfg.data, stage="pretrain", batch_size=batch_size)
    loader.setup("fit")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    model.train()
    batches = itertools.cycle(loader.train_dataloader())
    for _ in range(steps):
        batch = next(batches)
        _, loss = model(batch["input_ids"], batch["targets"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def nf4_errors(model: MiniGPT, batch) -> dict:
    """Part B's bare-base measure, fp32 vs NF4 (double quantization), and the per-weight error."""
    quantized = copy.deepcopy(model)
    quantize_model(quantized, SCHEME)
    logits = compare_logits(logits_of(model, batch[0]), logits_of(quantized, batch[0]), batch[1])
    weight_errors = []
    for name, layer in quantized.named_modules():
        if isinstance(layer, QuantizedLinear):
            dense = model.get_submodule(name).weight.detach()
            weight_errors.append(((dense - layer.dequantized_weight(torch.float32)).norm() / dense.norm()).item())
    return {
        "relative_logit_error": logits["relative_diff"],
        "top1_agreement": logits["top1_agreement"],
        "weight_error": statistics.fmean(weight_errors),
    }


def width_row(width: int, steps: int, batch_size: int, cfg, batch) -> dict:
    torch.manual_seed(0)
    config = MiniGPTConfig(n_layer=4, n_head=4, d_model=width, d_ff=4 * width)
    model = MiniGPT(config)
    row = {"width": width, "parameters": model.num_parameters(), "initialised": nf4_errors(model, batch)}
    pretrain(model, cfg, steps, batch_size)
    row["pretrained"] = nf4_errors(model, batch)
    print(f"width {width}: {row}", flush=True)
    return row


def draw(result: dict, path: Path) -> None:
    figure = Figure(figsize=(6, 4), layout="constrained")
    axes = figure.subplots()
    widths = [r["width"] for r in result["widths"]]
    labels = {
        "initialised": "freshly initialised",
        "pretrained": f"pretrained, {result['steps']} steps of {result['batch_size']}",
    }
    for (kind, label), marker in zip(labels.items(), "so", strict=True):
        values = [100 * r[kind]["relative_logit_error"] for r in result["widths"]]
        axes.plot(widths, values, marker=marker, label=label)
    if result.get("shipped_base"):
        axes.plot(
            [64],
            [100 * result["shipped_base"]["relative_logit_error"]],
            "r*",
            markersize=12,
            label="the default base (fully pretrained)",
        )
    axes.axhspan(1, 3, color="green", alpha=0.1, label="the seeds' 1-3%")
    axes.set_xscale("log", base=2)
    axes.set_xticks(widths, [str(w) for w in widths])
    axes.set_xlabel("layer width d_model (4 layers, d_ff = 4 d)")
    axes.set_ylabel("mean |Δlogit| / mean |logit| (%)")
    axes.set_title("bare base, fp32 vs NF4 with double quantization")
    axes.legend(fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def report(result: dict) -> str:
    rows = [
        [
            r["width"],
            f"{r['parameters']:,}",
            f"{r['initialised']['weight_error']:.2%}",
            f"{r['initialised']['relative_logit_error']:.2%}",
            f"{r['pretrained']['relative_logit_error']:.2%}",
            f"{r['pretrained']['top1_agreement']:.1%}",
        ]
        for r in result["widths"]
    ]
    header = [
        "width",
        "parameters",
        "per-weight NF4 error",
        "logit error, initialised",
        f"logit error, {result['steps']} steps of {result['batch_size']}",
        "argmax agreement (pretrained)",
    ]
    text = markdown_table(header, rows)
    if result.get("shipped_base"):
        shipped = result["shipped_base"]
        text += (
            f"\n\nThe default base (width 64, fully pretrained): logit error "
            f"{shipped['relative_logit_error']:.2%}, per-weight error {shipped['weight_error']:.2%}."
        )
    return text + f"\n\n![NF4 logit error against width](../figures/{FIGURE.name})\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--widths", type=int, nargs="+", default=[64, 128, 256, 512, 768])
    parser.add_argument("--batch-size", type=int, default=16, help="sentences per pretraining step")
    args = parser.parse_args()
    cfg = preview_config()
    batch = fixed_batch(cfg)
    result = {"scheme": SCHEME, "steps": args.steps, "batch_size": args.batch_size, "batch": len(batch[0])}
    shipped = base_dir_for(cfg)
    if (shipped / "config.json").is_file():
        result["shipped_base"] = nf4_errors(load_base(shipped).model, batch)
    result["widths"] = []
    for width in args.widths:  # written after each width: the widest take longest
        result["widths"].append(width_row(width, args.steps, args.batch_size, cfg, batch))
        draw(result, FIGURE)
        write_results("nf4_width", result, "NF4 logit error against layer width", report(result))
    print(result)


if __name__ == "__main__":
    main()

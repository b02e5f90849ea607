"""Training step time of minituner against a plain PyTorch loop and PEFT, on CPU or CUDA. Prints JSON.

For the default MiniGPT and the ~100M preset (``conf/model/minigpt_100m.yaml``, random weights),
and for full fine-tuning, LoRA (the default: r=8 on the MLP linears), QLoRA (the same on an
NF4 + double-quantized base) and both on a bf16 frozen base (``lora_bf16``, ``qlora_bf16``: what
``base.dtype=bfloat16`` stores; adapters stay fp32), times in one process, on the same model and the same batch:

* ``plain``: a hand-written loop (forward, backward, clip the gradient norm to 1, AdamW step,
  zero the gradients);
* ``minituner``: the Lightning Trainer with minituner's LightningModule and its per-step
  callback (the NaN guard), timed between consecutive batch starts, so data fetching, hooks
  and logging count;
* ``peft``: when ``peft`` is installed, PEFT's LoRA on the same MiniGPT in the plain loop; for
  QLoRA, when ``bitsandbytes`` is installed too, PEFT's LoRA on bitsandbytes's NF4 + double-
  quantized ``Linear4bit`` layers (blocks of 64, CPU kernels) in place of the same linears.

Median step time over the timed steps (after warm-up), tokens per second, peak CUDA memory per
variant (on a GPU), and the ratios the goals are about: minituner / plain (framework overhead,
goal <= 1.10 at ~100M), LoRA minituner / PEFT (goal <= 1.0), QLoRA / LoRA (goal <= 1.10 at ~100M
on CPU), QLoRA minituner / PEFT + bitsandbytes (goal <= 1.0), and PEFT + bitsandbytes's own
QLoRA / LoRA. ``--device cuda``: bf16 autocast in the plain loops, ``precision=bf16-mixed`` in
the Trainer, bitsandbytes computing in bf16, timers synchronised with the GPU (``device.py``).

``--write --name NAME`` also writes ``benchmarks/results/NAME.json`` and the generated ``NAME.md``.

    .venv/bin/python benchmarks/train_throughput.py [--models minigpt minigpt_100m] [--steps 5] [--write]
        [--device cuda --models minigpt_100m minigpt_1b]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial

import lightning as L
import torch
from device import CPU, Device, add_device_argument
from minituner.callbacks.nan_guard import NaNGuard
from result_files import markdown_table, write_results
from torch import nn
from torch.utils.data import DataLoader, Dataset

from minituner.config.nodes import model_preset
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import quantize_model
from minituner.training.module import MiniGPTModule

try:
    import peft
except ImportError:  # optional reference
    peft = None
try:
    import bitsandbytes
except ImportError:  # optional reference
    bitsandbytes = None

# batch (sequences x tokens) per model: the default's real training batch; CPU-sized ones at ~100M and
# ~1B (a GPU's: --batch); a smoke-test size for the tiny preset
BATCHES = {"tiny": (2, 16), "minigpt": (32, 64), "minigpt_100m": (4, 128), "minigpt_1b": (4, 128)}
LORA = LoRAConfig(r=8, alpha=16, dropout=0.05, target_modules="mlp", seed=0)


def shape(name: str) -> MiniGPTConfig:
    return model_preset(name)


REGIMES = ("full", "lora", "qlora", "lora_bf16", "qlora_bf16")


def build(config: MiniGPTConfig, regime: str, device: Device) -> MiniGPT:
    """A seeded model for ``regime`` on ``device``: full, lora, qlora, or lora / qlora on a bf16 base (``_bf16``)."""
    torch.manual_seed(0)
    model = MiniGPT(config)
    if regime.startswith("qlora"):
        quantize_model(model, "nf4_dq")
    if regime.endswith("_bf16"):
        cast_frozen_base(model, "bfloat16")  # the rest of the frozen base in bf16, as base.dtype=bfloat16 does
    if regime != "full":
        inject_lora(model, LORA)
    return model.to(device.torch_device).train()


def fixed_batch(batch: int, seq: int, device: Device) -> dict:
    ids = torch.randint(0, 256, (batch, seq + 1), generator=torch.Generator().manual_seed(1)).to(device.torch_device)
    return {"kind": "lm", "input_ids": ids[:, :-1].contiguous(), "targets": ids[:, 1:].contiguous()}


def optimizer_for(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)


def plain_loop(
    model: torch.nn.Module, batch: dict, warmup: int, steps: int, device: Device, forward=None
) -> list[float]:
    """Seconds per step of the hand-written loop (under the device's autocast)."""
    forward = forward or (lambda: model(batch["input_ids"], batch["targets"])[1])
    optimizer = optimizer_for(model)
    times = []
    for step in range(warmup + steps):
        device.synchronize()
        started = time.perf_counter()
        training_step(model, optimizer, forward, device)
        device.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - started)
    return times


def training_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, forward, device: Device) -> None:
    """Forward (the device's autocast), backward, clip the gradient norm to 1, AdamW step, drop the gradients."""
    with device.autocast():
        loss = forward()
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


class SameBatch(Dataset):
    """The same batch, ``length`` times (``batch_size=None``: no collation)."""

    def __init__(self, batch: dict, length: int):
        self.batch, self.length = batch, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        return self.batch


class StepTimer(L.Callback):
    """Seconds between consecutive batch starts (the last step: start to end), the device's queue drained."""

    def __init__(self, device: Device):
        self.device = device
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_batch_start(self, *args) -> None:
        self.device.synchronize()
        self.starts.append(time.perf_counter())

    def on_train_batch_end(self, *args) -> None:
        self.device.synchronize()
        self.end = time.perf_counter()

    def step_times(self) -> list[float]:
        marks = [*self.starts, self.end]
        return [b - a for a, b in zip(marks, marks[1:], strict=False)]


def minituner_loop(model: MiniGPT, batch: dict, warmup: int, steps: int, device: Device) -> list[float]:
    """Seconds per step of minituner's LightningModule in a Lightning Trainer."""
    timer = StepTimer(device)
    module = MiniGPTModule(model, optimizer=partial(torch.optim.AdamW, lr=1e-4))
    trainer = L.Trainer(
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer, NaNGuard(check_dequantized=False)],
        **device.trainer_options(),
    )
    trainer.fit(module, DataLoader(SameBatch(batch, warmup + steps), batch_size=None))
    return timer.step_times()[warmup:]


def linear4bit(linear: nn.Linear, device: Device = CPU) -> nn.Module:
    """``linear`` as bitsandbytes's frozen ``Linear4bit`` on ``device``: NF4, double quantization, blocks of 64.

    It computes in fp32 on the CPU and in bf16 on CUDA (the QLoRA recipe's compute dtype).
    """
    layer = bitsandbytes.nn.Linear4bit(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        compute_dtype=torch.bfloat16 if device.is_cuda else torch.float32,
        compress_statistics=True,
        quant_type="nf4",
    )
    layer.weight = bitsandbytes.nn.Params4bit(
        linear.weight.data, requires_grad=False, blocksize=64, compress_statistics=True, quant_type="nf4"
    )
    if linear.bias is not None:
        layer.bias = nn.Parameter(linear.bias.data, requires_grad=False)
    return layer.to(device.torch_device)  # quantizes here


def bitsandbytes_quantized(model: MiniGPT, device: Device) -> MiniGPT:
    """``model`` with the linears ``quantize_model`` quantizes as bitsandbytes NF4 + double quantization."""
    for name in [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, linear4bit(model.get_submodule(name), device))
    return model


def peft_loop(
    config: MiniGPTConfig, batch: dict, warmup: int, steps: int, device: Device, quantized: bool = False
) -> list[float]:
    """Seconds per step of PEFT's LoRA (same rank, alpha, dropout, targets) in the plain loop."""
    torch.manual_seed(0)
    base = MiniGPT(config)
    if quantized:
        base = bitsandbytes_quantized(base, device)
    lora = peft.LoraConfig(
        r=LORA.r, lora_alpha=LORA.alpha, lora_dropout=LORA.dropout, target_modules=["fc_in", "fc_out"]
    )
    model = peft.get_peft_model(base, lora).to(device.torch_device).train()
    forward = lambda: base(batch["input_ids"], batch["targets"])[1]  # noqa: E731
    return plain_loop(model, batch, warmup, steps, device, forward=forward)


def parse_batch(text: str) -> tuple[int, int]:
    sequences, _, tokens = text.partition("x")
    return int(sequences), int(tokens)


def summary(times: list[float], tokens: int, peak_memory: int | None) -> dict:
    median = statistics.median(times)
    row = {"median_step_s": round(median, 5), "tokens_per_s": round(tokens / median, 1), "steps": len(times)}
    return row | ({"peak_memory_bytes": peak_memory} if peak_memory is not None else {})


def variants(config: MiniGPTConfig, batch: dict, warmup: int, steps: int, regimes: list[str], device: Device) -> dict:
    """(regime, loop) -> a function timing that loop once: seconds per timed step."""
    loops = {}
    for regime in regimes:
        loops[regime, "plain"] = lambda r=regime: plain_loop(build(config, r, device), batch, warmup, steps, device)
        loops[regime, "minituner"] = lambda r=regime: minituner_loop(
            build(config, r, device), batch, warmup, steps, device
        )
    if peft is not None and "lora" in regimes:
        loops["lora", "peft"] = lambda: peft_loop(config, batch, warmup, steps, device)
    if peft is not None and bitsandbytes is not None and "qlora" in regimes:
        loops["qlora", "peft_bitsandbytes"] = lambda: peft_loop(config, batch, warmup, steps, device, quantized=True)
    return loops


def measure(
    name: str,
    batch_shape: tuple[int, int],
    warmup: int,
    steps: int,
    rounds: int,
    regimes: list[str],
    device: Device = CPU,
) -> dict:
    """Every variant ``rounds`` times in turn (so a slow spell of the machine hits them all alike)."""
    config = shape(name)
    batch_size, seq = batch_shape
    loops = variants(config, fixed_batch(batch_size, seq, device), warmup, steps, regimes, device)
    times: dict = {key: [] for key in loops}
    peaks: dict = dict.fromkeys(loops)
    for _ in range(rounds):
        for key, loop in loops.items():
            device.reset_peak_memory()
            times[key] += loop()
            peak = device.peak_memory_bytes()
            peaks[key] = peak if peaks[key] is None else max(peaks[key], peak)
    rows: dict = {}
    for (regime, loop), measured in times.items():
        rows.setdefault(regime, {})[loop] = summary(measured, batch_size * seq, peaks[regime, loop])

    def ratio(regime: str, loop: str, other_regime: str, other_loop: str) -> float:
        return round(rows[regime][loop]["median_step_s"] / rows[other_regime][other_loop]["median_step_s"], 3)

    ratios = {f"{r}_minituner_vs_plain": ratio(r, "minituner", r, "plain") for r in rows}
    for other in ("qlora", "lora_bf16", "qlora_bf16"):
        if other in rows and "lora" in rows:
            ratios[f"{other}_vs_lora_minituner"] = ratio(other, "minituner", "lora", "minituner")
            ratios[f"{other}_vs_lora_plain"] = ratio(other, "plain", "lora", "plain")
    if "peft" in rows.get("lora", {}):
        ratios["lora_minituner_vs_peft"] = ratio("lora", "minituner", "lora", "peft")
        ratios["lora_plain_vs_peft"] = ratio("lora", "plain", "lora", "peft")
    if "peft_bitsandbytes" in rows.get("qlora", {}):
        ratios["qlora_minituner_vs_peft_bitsandbytes"] = ratio("qlora", "minituner", "qlora", "peft_bitsandbytes")
        if "peft" in rows.get("lora", {}):
            ratios["qlora_vs_lora_peft_bitsandbytes"] = ratio("qlora", "peft_bitsandbytes", "lora", "peft")
    return {
        "parameters": sum(p.numel() for p in MiniGPT(config).parameters()),
        "batch": {"sequences": batch_size, "tokens_per_sequence": seq},
        "rounds": rounds,
        "regimes": rows,
        "ratios": ratios,
    }


def report(result: dict) -> str:
    """Per model: each regime's median step time per loop, then the ratios the goals are about."""
    loops = ("plain", "minituner", "peft", "peft_bitsandbytes")
    sections = []
    for name, model in result["models"].items():
        rows = [
            [regime] + [f"{timed[loop]['median_step_s']:.3f} s" if loop in timed else "" for loop in loops]
            for regime, timed in model["regimes"].items()
        ]
        ratios = markdown_table(["ratio of median step times", "value"], [[k, v] for k, v in model["ratios"].items()])
        batch = model["batch"]
        sections.append(
            f"## `{name}` ({model['parameters'] / 1e6:.2f}M parameters), {batch['sequences']} x "
            f"{batch['tokens_per_sequence']} tokens, {model['rounds']} rounds\n\n"
            f"{markdown_table(['regime', 'plain loop', 'minituner', 'PEFT', 'PEFT + bitsandbytes'], rows)}\n\n{ratios}"
        )
    versions = f"PEFT {result['peft']}, bitsandbytes {result['bitsandbytes']}; median step time over the timed steps."
    return versions + "\n\n" + "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(BATCHES), choices=list(BATCHES))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement (after 2 warm-up steps)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each variant, taken in turn")
    parser.add_argument("--batch", type=parse_batch, help="sequences x tokens, e.g. 4x256 (default: per model)")
    parser.add_argument(
        "--regimes",
        nargs="+",
        default=list(REGIMES),
        choices=REGIMES,
        help="_bf16: the frozen base (but NF4 codes) stored in bf16, adapters fp32",
    )
    add_device_argument(parser)
    parser.add_argument("--write", action="store_true", help="write results/NAME.{json,md}")
    parser.add_argument("--name", default="train_throughput", help="stem of the result files")
    args = parser.parse_args()
    result = {
        "host": {"machine": platform.machine(), **args.device.setup()},
        "peft": getattr(peft, "__version__", None),
        "bitsandbytes": getattr(bitsandbytes, "__version__", None),
        "models": {
            name: measure(name, args.batch or BATCHES[name], 2, args.steps, args.rounds, args.regimes, args.device)
            for name in args.models
        },
    }
    if args.write:
        write_results(args.name, result, "Training step time against a plain loop and PEFT", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

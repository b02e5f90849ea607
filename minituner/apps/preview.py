"""``minituner-preview``: the QLoRA preview (lab 03) as one command, with a generated REPORT.md.

A: compose an NF4 base with LoRA and show one composed projection. B: the same (reference)
adapter on a half-precision (fp16) base and on the NF4 base, logits compared on a fixed batch,
fp32 rows as context. C: one epoch of QLoRA training under the NaN guard, per-step loss. D:
memory of fp16-base LoRA vs NF4-base QLoRA training (fp32 rows as context) from the ledger and
the process, and the savings at 7B scale from the memory calculator. E: adapter swap on the NF4
base. F: the reference adapter merged into the NF4 base both ways, against serving it unmerged.
Then what the model writes: greedy completions of the irregular test prompts by the base, LoRA
and QLoRA, with a generation-based accuracy. The base and the reference adapter are cached; the
training runs of C and D are separate processes, so their RSS figures do not contaminate each
other, and while they train this process measures F and what the base and LoRA write (on one
thread: the QLoRA epoch outlasts the short runs and leaves a core free). Each part announces
itself on the terminal, and the children's progress lines are relayed.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from minituner.apps.runner import RelayedApp, finish_training_runs, start_training_runs, torch_threads, training_runs
from minituner.config.base_request import base_dir_for, reference_run_name, shipped_dir
from minituner.config.nodes import lora_config, model_config, model_preset
from minituner.config.shipped import CONF_DIR
from minituner.lora.layer import lora_layers
from minituner.memory.footprint import predict
from minituner.model.minigpt import IGNORE_INDEX
from minituner.quant.storage import quantized_storage
from minituner.reports.merge_fidelity import base_copy, compare_logits, logits_of
from minituner.reports.parity import parity
from minituner.reports.preview import report_text
from minituner.reports.reference_measurements import reference_measurements, what_the_model_writes
from minituner.reports.run_records import memory_rows, step_losses
from minituner.store.artifacts import sha256_file, write_json_atomic, write_text_atomic
from minituner.store.base_cache import CONFIG_FILE, LoadedBase, ensure_base, load_base
from minituner.store.provenance import git_state, host_info, package_versions
from minituner.store.shipped import REFERENCE_ADAPTERS, install_shipped_base, install_shipped_reference
from minituner.training.metrics import relative_drift
from minituner.training.terminal import quiet_library_notices

GIB = 2**30
QLORA_EPOCH = "QLoRA (NF4 base)"  # the run that trains one epoch; the other three measure memory


class StageClock:
    """Announces each part of the preview as it starts, and how long the one before took."""

    def __init__(self):
        self.started: float | None = None

    def next(self, title: str) -> None:
        """End the current part (its time) and announce the next."""
        self.finish()
        print(f"> {title}", flush=True)
        self.started = time.perf_counter()

    def finish(self) -> None:
        """Say how long the current part took."""
        if self.started is not None:
            print(f"  done in {time.perf_counter() - self.started:.1f} s", flush=True)
            self.started = None


def prepare_base(cfg: DictConfig) -> str:
    """Where the preview's base comes from: ``cached``, ``shipped`` (installed now) or ``built``.

    ``built``: the reference adapter's training run pretrains it first (unless that run is cached).
    """
    directory = base_dir_for(cfg)
    if (directory / CONFIG_FILE).is_file():
        return "cached"
    ensure_base(directory, lambda: install_shipped_base(shipped_dir(cfg), directory))
    return "shipped" if (directory / CONFIG_FILE).is_file() else "built"


def reference_adapter(cfg: DictConfig, forwarded: list[str]) -> tuple[Path, dict, str]:
    """The reference LoRA adapter (unquantized base): cached, else the shipped one, else trained now.

    The shipped one is used when its name (the base's key, the LoRA recipe and seed) is this config's.

    Returns:
        The adapter directory, the metrics of the run that trained it (base metrics included)
        and where it came from: ``cached``, ``shipped`` or ``trained``.
    """
    run_dir = Path(cfg.paths.outputs_dir) / REFERENCE_ADAPTERS / reference_run_name(cfg)
    if (run_dir / "metrics.json").is_file():
        source = "cached"
    elif install_shipped_reference(shipped_dir(cfg), run_dir, base_dir_for(cfg)):
        source = "shipped"
    else:
        training_runs({run_dir: [*forwarded, "regime=lora", "quant=none"]}, cfg.paths.outputs_dir)
        source = "trained"
    return run_dir / "adapter", json.loads((run_dir / "metrics.json").read_text()), source


def fixed_batch(cfg: DictConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` sentences of the irregular test split, as input ids and a token mask."""
    datamodule = instantiate(cfg.data, stage="irregular")
    batch = next(iter(datamodule.test_dataloader()[0]))
    return batch["input_ids"][:size], batch["targets"][:size] != IGNORE_INDEX


SCALE_BATCH = (4, 512)  # sequences x tokens of the "at 7B scale" step


def scale_savings(cfg: DictConfig) -> dict:
    """LoRA vs QLoRA at the ``preview.scale_model`` shape: predicted step peaks on a GPU (fp16 mixed precision)."""
    shape = model_preset(cfg.preview.scale_model)
    lora = lora_config(cfg)
    batch, seq = SCALE_BATCH
    common = {"lora": lora, "precision": "fp16_mixed", "batch_size": batch, "seq_len": seq, "device": "cuda"}
    plain = predict(shape, "LoRA", **common)
    quantized = predict(shape, "QLoRA", quant=cfg.preview.quant, **common)
    return {
        "model": cfg.preview.scale_model,
        "batch": [batch, seq],
        "lora_peak": plain.peak,
        "qlora_peak": quantized.peak,
    }


def adapter_on_two_bases(cfg: DictConfig, base: LoadedBase, reference_dir: Path, batch) -> tuple[dict, torch.Tensor]:
    """A + B: the reference adapter on the half-precision base (model A) and on the NF4 base (model B).

    Model B keeps the rest of its base in the same half precision (``reports.parity`` says how it
    is checked); the fp32 comparisons are context.

    Returns:
        The figures of A and B, and the NF4 (fp32 compute) model's logits, which part E compares against.
    """
    half, scheme = cfg.preview.half_dtype, cfg.preview.quant
    model_b = base_copy(base, scheme, half, reference_dir)
    first_adapted = next(iter(lora_layers(model_b)))
    check, context = parity(base, scheme, half, reference_dir, batch, model_b)
    figures = {
        "composed_module": {"name": first_adapted, "repr": repr(model_b.get_submodule(first_adapted))},
        "quantized_storage": quantized_storage(model_b),
        "parity": check,
        "parity_context": context,
    }
    return figures, logits_of(base_copy(base, scheme, adapter_dir=reference_dir), batch[0])


def training_run_dirs(cfg: DictConfig, run_dir: Path) -> dict[str, Path]:
    """C + D's four runs by label: three short ones for the memory table, then the QLoRA epoch."""
    half = cfg.preview.half_dtype
    return {
        "LoRA (fp32 base)": run_dir / "lora_run",
        f"LoRA ({half} base)": run_dir / f"lora_{half}_run",
        f"QLoRA (NF4 + {half} base)": run_dir / f"qlora_{half}_run",
        QLORA_EPOCH: run_dir / "qlora_run",
    }


def start_training_parts(cfg: DictConfig, runs: dict[str, Path], forwarded: list[str]) -> dict[Path, RelayedApp]:
    """C + D: start one epoch of QLoRA (NaN guard raising) and three 3-step memory runs, in parallel."""
    half, scheme = cfg.preview.half_dtype, cfg.preview.quant
    # The base was measured when the reference adapter was trained, and the test set measures
    # the result: no validation passes needed here.
    fast = ["evaluate_base=false", "trainer.limit_val_batches=0"]
    epoch = [f"regime.max_epochs={cfg.preview.epochs}", "trainer.log_every_n_steps=1", *fast]
    # The memory runs are read for their ledger and RSS at step 2 only: no test pass (slow in
    # float16 on a CPU without fp16 arithmetic).
    short = ["trainer.max_steps=3", "trainer.limit_test_batches=0", *fast]
    if cfg.regime.get("replay"):
        # A 3-step run replays at most 3 batches of sentences: no need to write the rest. Rows are
        # padded to block_size, so no tensor's shape changes.
        short.append(f"regime.replay.sentences={3 * cfg.regime.replay.batch_size}")
    lora = [*forwarded, "regime=lora"]
    overrides = {
        "LoRA (fp32 base)": [*lora, "quant=none", *short],
        f"LoRA ({half} base)": [*lora, "quant=none", f"base.dtype={half}", *short],
        f"QLoRA (NF4 + {half} base)": [*lora, f"quant={scheme}", f"base.dtype={half}", *short],
        QLORA_EPOCH: [*lora, f"quant={scheme}", "callbacks.nan_guard.policy=raise", *epoch],
    }
    background = [runs[label] for label in runs if label != QLORA_EPOCH]
    return start_training_runs({runs[k]: v for k, v in overrides.items()}, cfg.paths.outputs_dir, background)


def measure_reference_meanwhile(cfg: DictConfig, children: dict, *args) -> tuple[dict, bool]:
    """F and what the base and LoRA write (``reference_measurements(cfg, *args)``) while ``children`` train.

    On one thread of this process: the QLoRA epoch outlasts the short runs and leaves a core free.
    A failure or Ctrl-C here leaves no training child behind.
    """
    try:
        with torch_threads(1):
            return reference_measurements(cfg, *args)
    except BaseException:
        for child in children.values():
            child.process.terminate()
        raise


def qlora_writes(cfg: DictConfig, writes: dict, model: torch.nn.Module, accuracy: float) -> dict:
    """``writes`` (the base's and LoRA's completions) with those of part C's adapter on the NF4 base added."""
    label = "QLoRA (NF4 base, part C)"
    added = what_the_model_writes(cfg, {label: model}, {label: accuracy})
    return writes | {key: writes[key] | added[key] for key in ("models", "showcase")}


def adapter_record(directory: Path) -> dict:
    """Where an adapter is and the SHA-256 of its weights (``preview.json``, the manifest)."""
    return {"path": str(directory), "sha256": sha256_file(directory / "adapter_model.safetensors")}


def run_preview(cfg: DictConfig, run_dir: Path, forwarded: list[str]) -> dict:
    """Parts A to F; returns everything the report shows (also written to preview.json).

    Each part announces itself and its time; the training children's progress lines are relayed.
    """
    started, clock = time.perf_counter(), StageClock()
    base_source = prepare_base(cfg)
    clock.next(
        f"the base ({base_dir_for(cfg)}) and the reference LoRA adapter: pretrained and trained when "
        "missing (a few minutes, once), else loaded from outputs/"
    )
    reference_dir, reference_metrics, reference_source = reference_adapter(cfg, forwarded)
    base = load_base(base_dir_for(cfg), model_config(cfg))
    batch = fixed_batch(cfg, cfg.preview.batch_size)
    clock.next(
        f"A + B: the reference adapter on the {cfg.preview.half_dtype} base and on the NF4 base, "
        "logits on a fixed batch"
    )
    two_bases, logits_nf4 = adapter_on_two_bases(cfg, base, reference_dir, batch)
    clock.next(
        "C + D: one epoch of QLoRA (NaN guard on) and three 3-step runs for the memory table, four "
        "processes in parallel; meanwhile here F and what the base and LoRA write"
    )
    runs = training_run_dirs(cfg, run_dir)
    children = start_training_parts(cfg, runs, forwarded)
    measured, measured_cached = measure_reference_meanwhile(
        cfg, children, base, reference_dir, reference_metrics, batch
    )
    qlora_metrics = finish_training_runs(children)[runs[QLORA_EPOCH]]
    qlora_metrics["regular_ppl_drift"] = relative_drift(
        reference_metrics["base_regular_ppl"], qlora_metrics["regular_ppl"]
    )
    clock.next("E: the adapter QLoRA trained, swapped in on the same NF4 base")
    swapped = base_copy(base, cfg.preview.quant, adapter_dir=runs[QLORA_EPOCH] / "adapter")
    swap = compare_logits(logits_nf4, logits_of(swapped, batch[0]), batch[1])
    clock.next("what QLoRA's adapter writes: greedy completions of the irregular test prompts")
    writes = qlora_writes(cfg, measured["writes"], swapped, qlora_metrics["irregular_acc"])
    clock.finish()
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "base_source": base_source,
        "reference_source": reference_source,
        "reference_measurements_cached": measured_cached,
        "base": {"path": str(base.directory), "sha256": base.weights_sha256},
        "reference_adapter": adapter_record(reference_dir),
        "qlora_adapter": adapter_record(runs[QLORA_EPOCH] / "adapter"),
        **two_bases,
        "half_dtype": cfg.preview.half_dtype,
        "quant": cfg.preview.quant,
        "qlora_losses": step_losses(runs[QLORA_EPOCH]),
        "qlora_metrics": qlora_metrics,
        "base_metrics": {k: v for k, v in reference_metrics.items() if k.startswith("base_")},
        "memory": memory_rows(runs),
        "scale": scale_savings(cfg),
        "swap": swap,
        "merging": measured["merging"],
        "writes": writes,
        "lora": OmegaConf.to_container(cfg.lora),
    }


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="preview")
def main(cfg: DictConfig) -> None:
    """Console entry point ``minituner-preview``."""
    quiet_library_notices()
    # This process puts adapters on copies of the base five times and reads a run's TensorBoard
    # events: LoRA's parameter table (each training run prints its own) and the event reader's file
    # notices would only repeat themselves on the terminal.
    for name in ("minituner.lora.inject", "tensorboard"):
        logging.getLogger(name).setLevel(logging.WARNING)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    forwarded = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith(("preview.", "paths."))]
    forwarded.append(f"paths.shipped_dir={cfg.paths.shipped_dir or 'null'}")  # the training runs use the same
    results = run_preview(cfg, run_dir, forwarded)
    write_json_atomic(run_dir / "preview.json", results)
    write_text_atomic(run_dir / "REPORT.md", report_text(results))
    write_json_atomic(
        run_dir / "manifest.json",
        {
            "status": "completed",
            "seed": cfg.seed,
            "overrides": list(HydraConfig.get().overrides.task),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "versions": package_versions(),
            "git": git_state(),
            "host": host_info(),
            "base": results["base"],
            "artifacts": {"reference_adapter": results["reference_adapter"], "qlora_adapter": results["qlora_adapter"]},
        },
    )
    print((run_dir / "REPORT.md").read_text())
    print(f"report: {run_dir / 'REPORT.md'} ({results['seconds']} s)")


if __name__ == "__main__":
    main()

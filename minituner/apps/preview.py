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

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Collection
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from minituner.apps.runner import RelayedApp, wait_all
from minituner.config.base_request import base_dir_for
from minituner.config.nodes import lora_config, model_config
from minituner.config.shipped import CONF_DIR
from minituner.lora.layer import lora_layers
from minituner.memory.footprint import predict
from minituner.model.minigpt import IGNORE_INDEX, MiniGPTConfig
from minituner.quant.storage import quantized_storage
from minituner.reports.merge_fidelity import base_copy, compare_logits, logits_of
from minituner.reports.preview import report_text
from minituner.reports.reference_measurements import reference_measurements, what_the_model_writes
from minituner.store.artifacts import sha256_file, write_json_atomic, write_text_atomic
from minituner.store.base_cache import load_base
from minituner.store.provenance import git_state, host_info, package_versions
from minituner.training.metrics import relative_drift
from minituner.training.terminal import PROGRESS_PREFIX, quiet_library_notices

GIB, MIB = 2**30, 2**20
# Niceness of the short memory runs beside part C's epoch, the preview's critical path: with them at
# the same priority on 2 cores, the epoch's process got a core only part of the time.
BACKGROUND_NICENESS = 10


def training_runs(runs: dict[Path, list[str]], outputs_dir: str) -> dict[Path, dict]:
    """Run ``minituner-train`` once per run directory, all in parallel, and wait for them.

    See :func:`start_training_runs` and :func:`finish_training_runs`.
    """
    return finish_training_runs(start_training_runs(runs, outputs_dir))


def start_training_runs(
    runs: dict[Path, list[str]], outputs_dir: str, background: Collection[Path] = ()
) -> dict[Path, RelayedApp]:
    """Start ``minituner-train`` once per run directory, all in parallel, each in its own process.

    Their progress lines are shown as they come, each with its run directory's name. The cores are
    shared out (``OMP_NUM_THREADS``, unless set already): four children of two threads each on two
    cores spent 39 s instead of 1.4 s writing their self-replay sentences, their threads spinning
    against each other. The runs in ``background`` get a lower scheduling priority (nice +10,
    where the system has one), so that the longest run is not slowed by the short ones.
    """
    threads = str(max(1, (os.cpu_count() or 1) // len(runs)))
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    children = {
        run_dir: RelayedApp(
            "train",
            run_dir.name,
            *overrides,
            f"hydra.run.dir={run_dir}",
            f"paths.outputs_dir={outputs_dir}",
            show=_worth_showing,
            env=env,
        )  # fmt: skip
        for run_dir, overrides in runs.items()
    }
    for run_dir in background if hasattr(os, "setpriority") else ():  # POSIX only
        with contextlib.suppress(OSError):  # already ended, or not allowed: it only costs time
            os.setpriority(os.PRIO_PROCESS, children[run_dir].process.pid, BACKGROUND_NICENESS)
    return children


def finish_training_runs(children: dict[Path, RelayedApp]) -> dict[Path, dict]:
    """Wait for the runs :func:`start_training_runs` started.

    Returns:
        Each run directory's metrics.

    Raises:
        RuntimeError: A run failed; names its command and shows its last lines.
    """
    for child, code in zip(children.values(), wait_all(list(children.values())), strict=True):
        if code != 0:
            tail = "\n".join(child.tail)
            raise RuntimeError(f"{' '.join(child.process.args)} failed (exit {code}); its last lines:\n{tail}")
    return {run_dir: json.loads((run_dir / "metrics.json").read_text()) for run_dir in children}


def _worth_showing(line: str) -> bool:
    """A training child's progress lines (every few seconds), its milestones, and where it wrote its run."""
    milestones = ("no base at", "self-replay: the base wrote")
    return line.startswith((PROGRESS_PREFIX, "run directory:")) or any(m in line for m in milestones)


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


def reference_adapter(cfg: DictConfig, forwarded: list[str]) -> tuple[Path, dict, bool]:
    """The cached reference LoRA adapter (unquantized base), trained first if missing.

    Returns:
        The adapter directory, the metrics of the run that trained it (base metrics included)
        and whether it was already cached.
    """
    key = sha256_text(OmegaConf.to_yaml(cfg.lora) + OmegaConf.to_yaml(cfg.regime) + str(cfg.seed))[:12]
    run_dir = Path(cfg.paths.outputs_dir) / "reference_adapters" / f"{base_dir_for(cfg).name}-{key}"
    cached = (run_dir / "metrics.json").is_file()
    if not cached:
        training_runs({run_dir: [*forwarded, "regime=lora", "quant=none"]}, cfg.paths.outputs_dir)
    return run_dir / "adapter", json.loads((run_dir / "metrics.json").read_text()), cached


def sha256_text(text: str) -> str:
    """SHA-256 of a string (cache keys)."""
    return hashlib.sha256(text.encode()).hexdigest()


def fixed_batch(cfg: DictConfig, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` sentences of the irregular test split, as input ids and a token mask."""
    datamodule = instantiate(cfg.data, stage="irregular")
    batch = next(iter(datamodule.test_dataloader()[0]))
    return batch["input_ids"][:size], batch["targets"][:size] != IGNORE_INDEX


def step_losses(run_dir: Path) -> list[float]:
    """The per-step ``train/loss`` values of a run, from its TensorBoard events."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars("train/loss")]


def memory_rows(run_dirs: dict[str, Path]) -> dict[str, dict]:
    """Per regime: ledger buckets at step 2, RSS after construction and step 2, CUDA when present."""
    rows = {}
    for label, run_dir in run_dirs.items():
        memory = json.loads((run_dir / "memory.json").read_text())
        built, step2 = memory["snapshots"]["after_construction"], memory["snapshots"]["after_step_2"]
        ledger = step2["ledger"]
        rows[label] = {
            **{b: ledger[b] for b in ("weights", "grads", "adam", "total")},
            "rss_after_construction": built["rss_bytes"],
            "rss_after_step_2": step2["rss_bytes"],
            "training_footprint_rss": step2["rss_bytes"] - built["rss_bytes"],
            "cuda_max_allocated": step2.get("cuda_max_allocated_bytes"),
            "predicted_equals_measured": all(r["equal"] for r in memory["predicted_vs_measured"].values()),
        }
    return rows


def scale_savings(cfg: DictConfig) -> dict:
    """LoRA vs QLoRA at the ``preview.scale_model`` shape (fp16 mixed precision), in bytes."""
    fields = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / f"{cfg.preview.scale_model}.yaml"))
    fields.pop("name")
    shape = MiniGPTConfig(**fields)
    lora = lora_config(cfg)
    plain = predict(shape, "LoRA", lora=lora, precision="fp16_mixed")
    quantized = predict(shape, "QLoRA", lora=lora, quant=cfg.preview.quant, precision="fp16_mixed")
    return {"model": cfg.preview.scale_model, "lora_total": plain.total, "qlora_total": quantized.total}


def run_preview(cfg: DictConfig, run_dir: Path, forwarded: list[str]) -> dict:
    """Parts A to F; returns everything the report shows (also written to preview.json).

    Each part announces itself and its time; the training children's progress lines are relayed.
    """
    started, clock = time.perf_counter(), StageClock()
    base_cached = (base_dir_for(cfg) / "config.json").is_file()
    clock.next(f"the base ({base_dir_for(cfg)}) and the reference LoRA adapter: pretrained and trained when "
               "missing (a few minutes, once), else loaded from outputs/")  # fmt: skip
    reference_dir, reference_metrics, reference_cached = reference_adapter(cfg, forwarded)
    base = load_base(base_dir_for(cfg), model_config(cfg))
    inputs, mask = fixed_batch(cfg, cfg.preview.batch_size)

    # A + B: the reference adapter on the half-precision base (model A) and on the NF4 base (model B,
    # the rest of it in the same half precision), then the same on fp32 as context
    half, scheme = cfg.preview.half_dtype, cfg.preview.quant
    clock.next(f"A + B: the reference adapter on the {half} base and on the NF4 base, logits on a fixed batch")
    model_a, model_b = base_copy(base, "none", half, reference_dir), base_copy(base, scheme, half, reference_dir)
    first_adapted = next(iter(lora_layers(model_b)))
    logits_a, logits_b = logits_of(model_a, inputs), logits_of(model_b, inputs)
    parity = compare_logits(logits_a, logits_b, mask) | {"tolerance": cfg.preview.tolerance, "batch": len(inputs)}
    parity["within_tolerance"] = parity["relative_diff"] <= cfg.preview.tolerance
    lora_fp32 = base_copy(base, adapter_dir=reference_dir)
    qlora_fp32 = base_copy(base, scheme, adapter_dir=reference_dir)
    logits_fp32, logits_nf4 = logits_of(lora_fp32, inputs), logits_of(qlora_fp32, inputs)
    context = {"fp32 base vs NF4 base (fp32 compute)": compare_logits(logits_fp32, logits_nf4, mask),
               f"fp32 base vs {half} base": compare_logits(logits_fp32, logits_a, mask),
               "bare bases, no adapter: fp32 vs NF4": compare_logits(
                   logits_of(base.model, inputs), logits_of(base_copy(base, scheme), inputs), mask)}  # fmt: skip

    # C + D: one epoch of QLoRA training; short LoRA / QLoRA runs for their memory at step 2 (in parallel)
    clock.next("C + D: one epoch of QLoRA (NaN guard on) and three 3-step runs for the memory table, four "
               "processes in parallel; meanwhile here F and what the base and LoRA write")  # fmt: skip
    runs = {
        "LoRA (fp32 base)": run_dir / "lora_run",
        f"LoRA ({half} base)": run_dir / f"lora_{half}_run",
        f"QLoRA (NF4 + {half} base)": run_dir / f"qlora_{half}_run",
        "QLoRA (NF4 base)": run_dir / "qlora_run",
    }
    # The base was measured when the reference adapter was trained, and the test set measures
    # the result: no validation passes needed here.
    fast = ["evaluate_base=false", "trainer.limit_val_batches=0"]
    epoch = [f"regime.max_epochs={cfg.preview.epochs}", "trainer.log_every_n_steps=1", *fast]
    # The memory runs are read for their ledger and RSS at step 2 only: no test pass. Theirs took 10
    # of each float16 run's 19 s on a CPU without fp16 arithmetic (an AMD EPYC).
    short = ["trainer.max_steps=3", "trainer.limit_test_batches=0", *fast]
    if cfg.regime.get("replay"):
        # A 3-step run replays at most 3 batches of sentences: writing the other ~900 took each
        # memory run 1.1 s of CPU. Rows are padded to block_size, so no tensor's shape changes.
        short.append(f"regime.replay.sentences={3 * cfg.regime.replay.batch_size}")
    lora = [*forwarded, "regime=lora"]
    children = start_training_runs(
        {
            runs["LoRA (fp32 base)"]: [*lora, "quant=none", *short],
            runs[f"LoRA ({half} base)"]: [*lora, "quant=none", f"base.dtype={half}", *short],
            runs[f"QLoRA (NF4 + {half} base)"]: [*lora, f"quant={scheme}", f"base.dtype={half}", *short],
            runs["QLoRA (NF4 base)"]: [*lora, f"quant={scheme}", "callbacks.nan_guard.policy=raise", *epoch],
        },
        cfg.paths.outputs_dir,
        background=[d for d in runs.values() if d != runs["QLoRA (NF4 base)"]],  # the memory runs
    )
    # While they train (the QLoRA epoch outlasts the others on one core), the parts that need no
    # run of theirs: F, and the completions of the base and of LoRA, on one thread of this process.
    try:
        with torch_threads(1):
            measured, measured_cached = reference_measurements(
                cfg, base, reference_dir, reference_metrics, (inputs, mask)
            )
    except BaseException:  # Ctrl-C or a failure here: leave no training child behind
        for child in children.values():
            child.process.terminate()
        raise
    metrics = finish_training_runs(children)
    qlora_metrics = metrics[runs["QLoRA (NF4 base)"]]
    qlora_metrics["regular_ppl_drift"] = relative_drift(
        reference_metrics["base_regular_ppl"], qlora_metrics["regular_ppl"]
    )
    losses = step_losses(runs["QLoRA (NF4 base)"])

    # E: adapter swap on the NF4 base
    clock.next("E: the adapter QLoRA trained, swapped in on the same NF4 base")
    swapped = base_copy(base, scheme, adapter_dir=runs["QLoRA (NF4 base)"] / "adapter")
    swap = compare_logits(logits_nf4, logits_of(swapped, inputs), mask)

    # What the model writes, third writer: QLoRA's adapter on the NF4 base (the base and LoRA wrote above)
    clock.next("what QLoRA's adapter writes: greedy completions of the irregular test prompts")
    qlora_label = "QLoRA (NF4 base, part C)"
    writes = measured["writes"]
    qlora_writes = what_the_model_writes(cfg, {qlora_label: swapped}, {qlora_label: qlora_metrics["irregular_acc"]})
    for key in ("models", "showcase"):
        writes[key] |= qlora_writes[key]
    clock.finish()

    qlora_adapter = runs["QLoRA (NF4 base)"] / "adapter" / "adapter_model.safetensors"
    reference_weights = reference_dir / "adapter_model.safetensors"
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "base_cached": base_cached,
        "reference_cached": reference_cached,
        "reference_measurements_cached": measured_cached,
        "base": {"path": str(base.directory), "sha256": base.weights_sha256},
        "reference_adapter": {"path": str(reference_dir), "sha256": sha256_file(reference_weights)},
        "qlora_adapter": {"path": str(qlora_adapter.parent), "sha256": sha256_file(qlora_adapter)},
        "composed_module": {"name": first_adapted, "repr": repr(model_b.get_submodule(first_adapted))},
        "quantized_storage": quantized_storage(model_b),
        "half_dtype": half,
        "quant": scheme,
        "parity": parity,
        "parity_context": context,
        "qlora_losses": losses,
        "qlora_metrics": qlora_metrics,
        "base_metrics": {k: v for k, v in reference_metrics.items() if k.startswith("base_")},
        "memory": memory_rows(runs),
        "scale": scale_savings(cfg),
        "swap": swap,
        "merging": measured["merging"],
        "writes": writes,
        "lora": OmegaConf.to_container(cfg.lora),
    }


@contextlib.contextmanager
def torch_threads(count: int):
    """Run the block on ``count`` torch threads, then give back the count it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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

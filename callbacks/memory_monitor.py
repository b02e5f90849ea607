"""Memory snapshots at the moments that matter, beside the exact ledger and the prediction.

Snapshots (process RSS, and on CUDA allocated / max allocated / reserved, each with the tensor
ledger at that moment):

* ``after_construction``: the base is loaded (or built), nothing else;
* ``after_quantize_and_inject``: the frozen base quantized (``quant=...``) and LoRA injected;
* ``after_step_2``: allocators commit lazily, so gradients and Adam state are only all there
  after a couple of optimizer steps (a run shorter than 2 steps is snapshotted at its end; the
  ``step`` field says which);
* ``end``: after training and testing, with the peaks.

Beside them ``predicted`` is the memory calculator's four-bucket footprint for the same config,
and ``predicted_vs_measured`` compares its weights / grads / Adam with the step-2 ledger.
``activations`` compares the activation model's saved bytes with what autograd saved in the
forward passes of the last training step before the snapshot (``measured_bytes``, distinct
storages seen by ``saved_tensors_hooks``), by part of the model. Under mixed precision
(autocast) the model does not apply: ``predicted_bytes`` is null there. All of it goes to
``memory.json``, to TensorBoard scalars (``memory/...``) and a text table.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from minituner.callbacks.run_hooks import RunContext, RunHooks

from minituner.config.nodes import lora_config, model_config, training_setup
from minituner.memory.activations import saved_activations
from minituner.memory.footprint import predict
from minituner.memory.ledger import process_memory, tensor_ledger
from minituner.memory.saved_tensors import SavedTensorMeter
from minituner.store.artifacts import write_json_atomic

MIB = 2**20
COMPARED_BUCKETS = ("weights", "grads", "adam")


class MemoryMonitor(L.Callback, RunHooks):
    """Write ``memory.json`` with snapshots, the ledger and the predicted footprint.

    Args:
        snapshot_step: The optimizer step after which the training snapshot is taken.
    """

    def __init__(self, snapshot_step: int = 2):
        self.snapshot_step = snapshot_step
        self.snapshots: dict[str, dict] = {}
        self.run: RunContext | None = None
        self.meter: SavedTensorMeter | None = None
        self.activations: dict | None = None

    def snapshot(self, name: str, model, optimizer=None, step: int = 0) -> dict:
        """Record process memory and the tensor ledger under ``name``."""
        self.snapshots[name] = {"step": step, **process_memory(), "ledger": tensor_ledger(model, optimizer)}
        return self.snapshots[name]

    def on_run_start(self, run: RunContext) -> None:
        self.run = run
        self.snapshot("after_construction", run.model)

    def on_model_ready(self, run: RunContext) -> None:
        self.snapshot("after_quantize_and_inject", run.model)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step < self.snapshot_step:  # the last such step's passes are kept
            self.meter = SavedTensorMeter(getattr(pl_module, "model", pl_module)).__enter__()

    def on_before_backward(self, trainer: L.Trainer, pl_module, loss) -> None:
        if self.meter is not None:
            self.meter.__exit__(None, None, None)
            self.activations = {"measured_bytes": self.meter.bytes, "batches": self.meter.batches}
            self.meter = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step == self.snapshot_step and f"after_step_{self.snapshot_step}" not in self.snapshots:
            self._training_snapshot(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if f"after_step_{self.snapshot_step}" not in self.snapshots:  # a run shorter than the snapshot step
            self._training_snapshot(trainer, pl_module)

    def _training_snapshot(self, trainer: L.Trainer, pl_module) -> None:
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        model = getattr(pl_module, "model", pl_module)
        self.snapshot(f"after_step_{self.snapshot_step}", model, optimizer, trainer.global_step)

    def on_run_end(self, run: RunContext, metrics: dict) -> None:
        self.snapshot("end", run.model, step=run.trainer.global_step)
        report = self.report(run)
        write_json_atomic(run.run_dir / "memory.json", report)
        self._log(run.trainer, report)

    def on_run_failed(self, run: RunContext, error: BaseException) -> None:
        if run.model is not None:
            write_json_atomic(run.run_dir / "memory.json", self.report(run) | {"failed": repr(error)})

    def report(self, run: RunContext) -> dict:
        """The content of ``memory.json``: snapshots, prediction, comparison, footprint."""
        cfg = run.cfg
        predicted = predict(
            model_config(cfg),
            label=f"{cfg.regime.name}/{cfg.quant.scheme}",
            lora=lora_config(cfg) if cfg.regime.trainable == "lora" else None,
            quant=cfg.quant.scheme,
            block_size=cfg.quant.block_size,
            precision="fp32",  # minituner keeps fp32 parameters; bf16-mixed only autocasts compute
            base_dtype=cfg.base.dtype if cfg.regime.needs_base else "float32",
            batch_size=cfg.regime.batch_size,
            seq_len=cfg.model.block_size,
        ).to_dict()
        report: dict = {"snapshots": self.snapshots, "predicted": predicted}
        training = self.snapshots.get(f"after_step_{self.snapshot_step}")
        if training is not None:
            measured = training["ledger"]
            report["predicted_vs_measured"] = {
                b: {"predicted": predicted[b], "measured": measured[b], "equal": predicted[b] == measured[b]}
                for b in COMPARED_BUCKETS
            }
            report["training_footprint_rss_bytes"] = (
                training["rss_bytes"] - self.snapshots["after_construction"]["rss_bytes"]
            )
        if self.activations is not None:
            report["activations"] = self._activations(run)
        return report

    def _activations(self, run: RunContext) -> dict:
        """Predicted and measured saved activations of the metered training step."""
        measured = self.activations
        if "mixed" in str(run.cfg.trainer.precision):
            return {"predicted_bytes": None, **measured, "equal": None, "by_part": {}}
        device = next(run.model.parameters()).device.type
        count = saved_activations(model_config(run.cfg), training_setup(run.cfg, device), measured["batches"])
        return {
            "predicted_bytes": count.total,
            **measured,
            "equal": count.total == measured["measured_bytes"],
            "by_part": count.by_part,
        }

    def _log(self, trainer: L.Trainer, report: dict) -> None:
        for logger in trainer.loggers:
            for name, snap in report["snapshots"].items():
                scalars = {
                    f"memory/{key.removesuffix('_bytes')}_mib/{name}": value / MIB
                    for key, value in snap.items()
                    if key.endswith("_bytes")
                }
                scalars[f"memory/ledger_total_mib/{name}"] = snap["ledger"]["total"] / MIB
                logger.log_metrics(scalars, step=snap["step"])
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("memory/table", memory_table(report), trainer.global_step)
                logger.experiment.flush()


def memory_table(report: dict) -> str:
    """Markdown table: each snapshot's RSS and ledger buckets, then predicted vs measured."""
    lines = [
        "| snapshot | step | RSS MiB | weights MiB | grads MiB | Adam MiB | ledger MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, snap in report["snapshots"].items():
        ledger = snap["ledger"]
        lines.append(
            f"| {name} | {snap['step']} | {snap['rss_bytes'] / MIB:.1f} | {ledger['weights'] / MIB:.3f} | "
            f"{ledger['grads'] / MIB:.3f} | {ledger['adam'] / MIB:.3f} | {ledger['total'] / MIB:.3f} |"
        )
    if "predicted_vs_measured" in report:
        lines += ["", "| bucket | predicted bytes | measured bytes |", "|---|---|---|"]
        for bucket, row in report["predicted_vs_measured"].items():
            lines.append(f"| {bucket} | {row['predicted']:,} | {row['measured']:,} |")
        activations = report.get("activations")
        if activations is not None:
            predicted = activations["predicted_bytes"]
            cell = "(autocast: not modelled)" if predicted is None else f"{predicted:,}"
            lines.append(f"| activations (saved for backward) | {cell} | {activations['measured_bytes']:,} |")
    return "\n".join(lines)

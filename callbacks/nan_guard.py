"""NaN/Inf guard: the loss every step, the trainable gradients before every optimizer step.

On the first non-finite value the guard writes ``nan_report.json`` and saves the last good
weights — the ones the optimizer has not touched yet — to ``last_good_adapter/`` (PEFT layout)
for LoRA runs, or ``last_good_weights.safetensors`` (trainable tensors) otherwise. Then:

* ``raise`` (default): stop the run with ``NonFiniteError``;
* ``skip_step``: drop this step's gradients so the optimizer leaves the weights alone, go on;
* ``stop``: drop the step and end training cleanly after this batch.

The NaN itself is never hidden: the loss is still logged as it was, and the number of
skipped steps is logged as ``nan_guard/skipped_steps``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch
from minituner.callbacks.run_hooks import RunContext, RunHooks, is_main_process
from safetensors.torch import save_file

from minituner.config.nodes import lora_config
from minituner.lora.adapter_io import save_adapter
from minituner.lora.layer import lora_layers
from minituner.quant.linear import QuantizedLinear
from minituner.store.artifacts import sha256_file, write_atomic, write_json_atomic

log = logging.getLogger(__name__)

POLICIES = ("raise", "skip_step", "stop")


class NonFiniteError(FloatingPointError):
    """Training met a NaN or Inf (the guard's ``raise`` policy)."""


def _json_number(value: float) -> float | str:
    """JSON has no NaN/Inf: write them as the strings ``nan``, ``inf``, ``-inf``."""
    return value if math.isfinite(value) else str(value)


class NaNGuard(L.Callback, RunHooks):
    """Stop, skip or raise on the first non-finite loss or gradient, with a report.

    Args:
        policy: ``raise``, ``skip_step`` or ``stop``.
        check_dequantized: At fit start, dequantize every quantized base layer once and check it
            (a non-finite frozen base always raises: no policy can repair it).
        output_dir: Where the report and last good weights go; default: the run directory.
    """

    def __init__(self, policy: str = "raise", check_dequantized: bool = True, output_dir: str | None = None):
        if policy not in POLICIES:
            raise ValueError(f"callbacks.nan_guard.policy={policy!r} is not one of {list(POLICIES)}")
        self.policy, self.check_dequantized = policy, check_dequantized
        self.output_dir = Path(output_dir) if output_dir else None
        self.run: RunContext | None = None
        self.batch_idx = -1
        self.bad_loss: float | None = None
        self.skipped_steps = 0
        self.report_path: Path | None = None

    def on_run_start(self, run: RunContext) -> None:
        self.run = run
        self.output_dir = self.output_dir or run.run_dir

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.output_dir = self.output_dir or Path(trainer.default_root_dir)
        if not self.check_dequantized:
            return
        bad = [
            m.name
            for m in pl_module.modules()
            if isinstance(m, QuantizedLinear) and not torch.isfinite(m.dequantized_weight()).all()
        ]
        if bad:
            self._report(trainer, pl_module, "dequantized base weights", {n: "non-finite" for n in bad})
            raise NonFiniteError(f"dequantized base weights of {bad} hold NaN or Inf; see {self.report_path}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.batch_idx, self.bad_loss = batch_idx, None

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            self.bad_loss = loss.item()
            self._trip(trainer, pl_module, "loss", {"loss": _json_number(self.bad_loss)})

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self.bad_loss is not None:  # already handled; the gradients are NaN through the loss
            self._drop_step(trainer, optimizer)
            return
        bad = {}
        for name, param in pl_module.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                bad[name] = int((~torch.isfinite(param.grad)).sum())
        if bad:
            self._trip(trainer, pl_module, "gradients", {n: f"{k} non-finite values" for n, k in bad.items()})
            self._drop_step(trainer, optimizer)

    def _trip(self, trainer: L.Trainer, pl_module: L.LightningModule, what: str, offenders: dict) -> None:
        if self.report_path is None and is_main_process():  # the first occurrence is the one worth a report
            self._report(trainer, pl_module, what, offenders)
        log.warning(
            "non-finite %s at step %d (batch %d): %s [policy %s]",
            what,
            trainer.global_step,
            self.batch_idx,
            list(offenders),
            self.policy,
        )
        if self.policy == "raise":
            raise NonFiniteError(
                f"non-finite {what} at step {trainer.global_step}: {list(offenders)}; see {self.report_path}"
            )
        if self.policy == "stop":
            trainer.should_stop = True

    def _drop_step(self, trainer: L.Trainer, optimizer: torch.optim.Optimizer) -> None:
        # A parameter without a gradient is left alone by every torch optimizer: no update, no
        # moment change, no weight decay.
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        self.skipped_steps += 1
        for logger in trainer.loggers:
            logger.log_metrics({"nan_guard/skipped_steps": self.skipped_steps}, trainer.global_step)

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, what: str, offenders: dict) -> None:
        good_path = self._save_last_good(pl_module)
        grad_norms = {
            name: _json_number(param.grad.norm().item())
            for name, param in pl_module.named_parameters()
            if param.grad is not None
        }
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        self.report_path = self.output_dir / "nan_report.json"
        write_json_atomic(
            self.report_path,
            {
                "what": what,
                "step": trainer.global_step,
                "batch_index": self.batch_idx,
                "learning_rate": optimizer.param_groups[0]["lr"] if optimizer else None,
                "policy": self.policy,
                "offending_tensors": offenders,
                "grad_norms": grad_norms,
                "last_good_path": str(good_path),
                "last_good_sha256": sha256_file(_weights_file(good_path)),
            },
        )

    def _save_last_good(self, pl_module: L.LightningModule) -> Path:
        """The weights before this step's update (the optimizer has not run yet)."""
        model = getattr(pl_module, "model", pl_module)
        run = self.run
        if run is not None and run.base is not None and lora_layers(model):
            directory = self.output_dir / "last_good_adapter"
            save_adapter(model, directory, lora_config(run.cfg), run.base.directory.name, run.base.weights_sha256)
            return directory
        path = self.output_dir / "last_good_weights.safetensors"
        trainable = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        write_atomic(path, lambda tmp: save_file(trainable, str(tmp)))
        return path


def _weights_file(path: Path) -> Path:
    return path / "adapter_model.safetensors" if path.is_dir() else path

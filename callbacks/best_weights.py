"""Keep the trainable weights of the best validation score and put them back when fit ends.

Lightning's ``EarlyStopping`` ends training ``patience`` checks after the best one, with the
weights of the last step. With this callback beside it, the adapter a run saves is the one with
the best monitored score (only the trainable tensors are copied: the adapter for LoRA runs).
"""

from __future__ import annotations

import math

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from minituner.callbacks.run_hooks import RunHooks

MODES = ("min", "max")


class BestWeights(L.Callback, RunHooks):
    """Remember the trainable weights at the best ``monitor`` value; restore them at fit end.

    Args:
        monitor: A logged validation metric, e.g. ``val/ppl``.
        mode: ``min`` (lower is better) or ``max``.
    """

    def __init__(self, monitor: str = "val/ppl", mode: str = "min"):
        if mode not in MODES:
            raise ValueError(f"callbacks.best_weights.mode={mode!r} is not allowed: must be one of {list(MODES)}")
        self.monitor, self.mode = monitor, mode
        self.best_value = math.inf if mode == "min" else -math.inf
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] = {}

    def _improved(self, value: float) -> bool:
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the base's evaluation before fit is no candidate
        if self.monitor not in trainer.callback_metrics:
            raise KeyError(
                f"callbacks.best_weights.monitor={self.monitor!r} was not logged; logged: "
                f"{sorted(trainer.callback_metrics)}"
            )
        value = float(trainer.callback_metrics[self.monitor])
        if self._improved(value):
            self.best_value, self.best_step = value, trainer.global_step
            self.best_state = {name: p.detach().clone() for name, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.best_state:
            return
        parameters = dict(pl_module.named_parameters())
        with torch.no_grad():
            for name, tensor in self.best_state.items():
                parameters[name].copy_(tensor)

    def run_metrics(self) -> dict:
        """The best score and the step it was reached at (the weights the run saves)."""
        if self.best_step is None:
            return {}
        return {f"best_{self.monitor.replace('/', '_')}": self.best_value, "best_step": self.best_step}

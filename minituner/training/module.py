"""The LightningModule that trains and evaluates a MiniGPT (plus, later, its adapters)."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from minituner.model.state_fit import fit_problems
from minituner.store.checkpoint_io import CheckpointError
from minituner.training.metrics import CHOICE_METRICS, candidate_preferences, evaluation_metrics
from minituner.training.replay import ReplaySet

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class MiniGPTModule(L.LightningModule):
    """Shared train/val/test step around a MiniGPT.

    Args:
        model: The network; its parameters with ``requires_grad`` are the ones trained.
        optimizer: Partial optimizer (``_partial_: true`` in config) taking the parameters.
        scheduler: Partial scheduler taking the optimizer and ``total_steps``; may be None.
        replay: The base's own sentences, whose weighted loss every training step adds
            (``minituner/training/replay.py``); None: the training data alone.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        replay: ReplaySet | None = None,
    ):
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.replay = replay
        self.stage_metrics = nn.ModuleDict({stage: nn.ModuleDict(evaluation_metrics()) for stage in ("val", "test")})

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, loss = self.model(batch["input_ids"], batch["targets"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=1)
        if self.replay is None or self.replay.weight == 0:
            return loss
        inputs, targets = self.replay.batch(self.global_step)
        _, replay_loss = self.model(inputs.to(self.device), targets.to(self.device))
        self.log("train/replay_loss", replay_loss, batch_size=len(inputs))
        return loss + self.replay.weight * replay_loss

    def _eval_step(self, stage: str, batch: dict) -> None:
        metrics = self.stage_metrics[stage]
        inputs, targets = batch["input_ids"], batch["targets"]
        if batch["kind"] in CHOICE_METRICS:
            name = CHOICE_METRICS[batch["kind"]]
            metrics[name].update(candidate_preferences(self.model, inputs, targets).float())
            self.log(f"{stage}/{name}", metrics[name], add_dataloader_idx=False)
            return
        logits, loss = self.model(inputs, targets)
        name = "ppl" if batch["kind"] == "lm" else "regular_ppl"
        metrics[name].update(logits, targets)
        self.log(f"{stage}/{name}", metrics[name], add_dataloader_idx=False, prog_bar=stage == "val")
        if batch["kind"] == "lm":
            self.log(f"{stage}/loss", loss, add_dataloader_idx=False, batch_size=len(inputs))

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch)

    def trainable_names(self) -> dict[str, torch.Size]:
        """State-dict names and shapes of the parameters that train (what a checkpoint keeps)."""
        return {name: p.shape for name, p in self.named_parameters() if p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The frozen base (possibly quantized) is cached elsewhere: keep only what trains.
        trainable = self.trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
        if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
            raise CheckpointError(f"the checkpoint's state_dict must map names to tensors, found {saved!r:.80}")
        problems = fit_problems(self.trainable_names(), {k: v.shape for k, v in saved.items()})
        if problems:
            raise CheckpointError("the checkpoint's trainable weights do not fit this model: " + "; ".join(problems))
        # Lightning loads the whole state dict strictly: the frozen tensors come from the model itself.
        checkpoint["state_dict"] = self.state_dict() | saved

    def configure_optimizers(self):
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError("the model has no trainable parameters; check the regime config")
        optimizer = self.optimizer_factory(trainable)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

"""Training checkpoints for exact resume: ``<run dir>/checkpoints/step-NNNNNNNN/``.

Every ``every_n_steps`` optimizer steps, at the end of every epoch (after its validation) and when
a signal stops the run, Lightning's checkpoint (trainable weights only, optimizer, scheduler, loop counters, the
other callbacks' states) is written through ``SafeCheckpointIO`` (safetensors + JSON, atomic),
together with what Lightning leaves out: every RNG state, the data loader's position in the
epoch, the config and the base's hash. ``resume=<run dir>`` restores all of it, so a run killed
at any moment ends with the same adapter, bit for bit, as one that never stopped (on the CPU).
Checkpoints are taken only after an optimizer step, never inside a gradient-accumulation window.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from minituner.callbacks.run_hooks import RunContext, RunHooks

from minituner.config.identity import resumable_config
from minituner.data.resumable_loader import LoaderPosition
from minituner.store.artifacts import remove_artifact
from minituner.store.checkpoint_io import CheckpointError, checkpoint_dirs
from minituner.store.resume import CHECKPOINT_DIR
from minituner.store.rng_state import rng_states, set_rng_states


class ResumeCheckpoint(Checkpoint, RunHooks):
    """Write resumable checkpoints and restore the RNG and data position on resume.

    Args:
        every_n_steps: Optimizer steps between checkpoints (epoch ends and signals add their own).
        keep_last: How many checkpoints to keep (older ones are deleted after a new one is whole).
    """

    def __init__(self, every_n_steps: int = 50, keep_last: int = 2):
        for key, value in (("every_n_steps", every_n_steps), ("keep_last", keep_last)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"callbacks.checkpoint.{key}={value!r} is not allowed: must be a positive integer")
        self.every_n_steps, self.keep_last = every_n_steps, keep_last
        self.run: RunContext | None = None
        self.trainer: L.Trainer | None = None
        self.position: LoaderPosition | None = None  # where the checkpoint being written resumes the data
        self.epoch_complete = False  # the last batch of the epoch has been trained
        self.restored: dict | None = None  # state of the checkpoint a resumed run starts from

    def on_run_start(self, run: RunContext) -> None:
        self.run = run

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.trainer = trainer

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.epoch_complete = batch_idx + 1 == trainer.num_training_batches
        if self.epoch_complete:
            return  # the epoch's checkpoint is taken at its end, after validation
        if (batch_idx + 1) % trainer.accumulate_grad_batches:
            return  # inside an accumulation window: the gradients so far are not checkpointed
        if trainer.global_step % self.every_n_steps == 0 or trainer.should_stop:
            self.position = trainer.train_dataloader.position(batch_idx + 1)
            self.save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if not self.epoch_complete:  # a stop mid-epoch: its checkpoint was taken after its last step
            return
        self.position = trainer.train_dataloader.next_epoch_position()
        self.save(trainer)

    def save(self, trainer: L.Trainer) -> None:
        """Write the checkpoint of the current step, then drop the oldest beyond ``keep_last``."""
        root = self.run.run_dir / CHECKPOINT_DIR
        trainer.save_checkpoint(root / f"step-{trainer.global_step:08d}")
        if trainer.is_global_zero:
            for old in checkpoint_dirs(root)[: -self.keep_last]:
                remove_artifact(old, "checkpoint")

    def state_dict(self) -> dict:
        position = {"generator_state": self.position.generator_state, "batches_done": self.position.batches_done}
        return {"rng": rng_states(), "loader": position}

    def load_state_dict(self, state_dict: dict) -> None:
        # Restored before Lightning first builds the train loader: it starts where the run stood.
        self.restored = state_dict
        loader = state_dict["loader"]
        self.trainer.datamodule.resume_position = LoaderPosition(loader["generator_state"], loader["batches_done"])

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        base = self.run.base
        checkpoint["minituner"] = {
            "config": resumable_config(self.run.cfg),
            "base_sha256": base.weights_sha256 if base is not None else None,
        }

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict) -> None:
        base = self.run.base
        saved = checkpoint.get("minituner", {}).get("base_sha256")
        current = base.weights_sha256 if base is not None else None
        if saved != current:
            raise CheckpointError(f"the checkpoint was trained on base {saved}, this run's base is {current}")

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        # Last moment before the loop continues: whatever ran since the restore (the sanity
        # check, the base's evaluation) must not shift the dropout stream.
        if self.restored is not None:
            set_rng_states(self.restored["rng"])
            self.restored = None

"""What a run prints: library notices that say nothing filtered out, a progress bar that counts steps.

Lightning repeats some notices at every checkpoint or run start that tell a minituner user
nothing (our checkpoints are safetensors, so ``weights_only`` has no pickle to guard; limits of
1.0 are the default; an advertisement). They are dropped by message; every other log line and
warning, Lightning's included, still shows.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

from lightning.pytorch.callbacks import RichProgressBar

NOTICES = (
    "`weights_only` was not set",  # at every checkpoint save
    "Tip: For seamless cloud logging",  # an advertisement at every Trainer
    "TPU available:",
    "HPU available:",
    "=1.0)` was configured so 100% of the batches",  # the default, once per limit
    "Trainer already configured with model summary callbacks",  # ours is in callbacks=default on purpose
)
NOTICE_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
)
NOISE_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # Lightning against this torch: a deprecation inside Lightning
    r"Precision bf16-mixed is not supported by the model summary",  # the summary's size estimate only
)


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in NOTICES)


def quiet_library_notices() -> None:
    """Drop ``NOTICES`` from Lightning's loggers and ignore ``NOISE_WARNINGS`` (idempotent)."""
    for name in NOTICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    for pattern in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


PROGRESS_PREFIX = "progress:"


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar; a run bounded by steps reads ``step N/M`` instead of ``Epoch 3/-2``.

    When stdout is not a terminal (a log file, a parent process such as the preview), rich draws
    nothing until the end, so the bar also prints a plain ``progress: step N/M ...`` line every
    ``plain_interval`` seconds.

    Args:
        plain_interval: Seconds between plain progress lines off a terminal.
        **kwargs: ``RichProgressBar``'s arguments.
    """

    def __init__(self, plain_interval: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.plain_interval = plain_interval
        self._last_plain = time.monotonic()

    def _get_train_description(self, current_epoch: int) -> str:  # Lightning's hook for the bar's label
        if self.trainer.max_steps > 0:
            return f"step {self.trainer.global_step}/{self.trainer.max_steps}"
        return super()._get_train_description(current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if trainer.max_steps > 0 and self.progress is not None and self.train_progress_bar_id is not None:
            self.progress.update(self.train_progress_bar_id, description=self._get_train_description(0))
        self.print_plain_progress(trainer)

    def print_plain_progress(self, trainer) -> None:
        """Off a terminal, a ``plain_progress`` line when ``plain_interval`` seconds have passed since the last."""
        if not sys.stdout.isatty() and time.monotonic() - self._last_plain >= self.plain_interval:
            self._last_plain = time.monotonic()
            print(plain_progress(trainer), flush=True)


def plain_progress(trainer) -> str:
    """``progress: step N/M (epoch E) train/loss L``: one line a parent process can show."""
    bound = f"/{trainer.max_steps}" if trainer.max_steps > 0 else ""
    loss = trainer.callback_metrics.get("train/loss")
    figure = f" train/loss {float(loss):.3f}" if loss is not None else ""
    return f"{PROGRESS_PREFIX} step {trainer.global_step}{bound} (epoch {trainer.current_epoch}){figure}"


def run_summary(run_dir: str, metrics: dict) -> str:
    """Where a finished run left its artifacts, and its three headline figures (test split)."""
    product = next(((key, metrics[key]) for key in ("adapter_dir", "model_dir") if key in metrics), None)
    lines = [f"run directory: {run_dir}"]
    if product:
        lines.append(f"{product[0].removesuffix('_dir')}: {product[1]}")
    elif metrics.get("regime") == "pretrain" and "base_dir" in metrics:
        lines.append(f"base: {metrics['base_dir']}")
    figures = []
    for key, label in (("irregular_acc", "irregular accuracy"), ("label_acc", "label accuracy")):
        if key in metrics:
            base = metrics.get(f"base_{key}")
            figures.append(f"{label} {metrics[key]:.2%}" + (f" (base {base:.2%})" if base is not None else ""))
    if "regular_ppl_drift" in metrics:
        figures.append(f"control drift {metrics['regular_ppl_drift']:+.2%}")
    elif "regular_ppl" in metrics:
        figures.append(f"control ppl {metrics['regular_ppl']:.4f}")
    if "ppl" in metrics:
        figures.append(f"test ppl {metrics['ppl']:.4f}")
    if figures:
        lines.append(" | ".join(figures))
    return "\n".join(lines)


class PurposeFirstParser(argparse.ArgumentParser):
    """``--help`` opens with ``<prog>: <purpose>``, then the usage and options, then the ``examples`` as given."""

    def __init__(self, prog: str, purpose: str, examples: str, **kwargs):
        super().__init__(
            prog=prog, epilog=f"examples:\n{examples}", formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
        )
        self.purpose = purpose

    def format_help(self) -> str:
        return f"{self.prog}: {self.purpose}\n\n{super().format_help()}"

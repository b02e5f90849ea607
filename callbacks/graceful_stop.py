"""SIGTERM / SIGINT / SIGUSR2: finish the current step, end training, save, exit with 128 + signal.

A scheduler's SIGTERM (pre-emption, ``scancel``) or a Ctrl-C no longer throws a run away:
the step in flight completes, fit ends as if ``max_steps`` were reached, the test metrics are
measured and the adapter (or model) is written as usual, with ``stopped_by_signal`` in
``metrics.json`` and ``status: interrupted`` in the manifest; ``minituner-train`` then exits with
the conventional code (143 for SIGTERM, 130 for SIGINT, 140 for SIGUSR2). A second signal stops at
once. A pretraining run that is interrupted does not put its half-trained base into the cache.
SIGUSR2 is what the submitit launcher (``hydra/launcher=slurm``) has SLURM send ``signal_delay_s``
before a job's time limit: the job saves and stops instead of being killed at the limit.
"""

from __future__ import annotations

import logging
import signal
import threading

import lightning as L
from minituner.callbacks.run_hooks import RunContext, RunHooks

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)


class GracefulStop(L.Callback, RunHooks):
    """Turn SIGTERM / SIGINT / SIGUSR2 into a clean stop after the current training step."""

    def __init__(self):
        self.received: signal.Signals | None = None
        self._previous: dict = {}

    def _handle(self, signum: int, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}")
        self.received = signal.Signals(signum)
        log.warning("%s received: finishing the current step, then saving", self.received.name)

    def _install(self) -> dict:
        """Make ``_handle`` the handler of every signal in ``SIGNALS``; return the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():  # Python only lets it install handlers
            return {}
        return {s: signal.signal(s, self._handle) for s in SIGNALS}

    def on_run_start(self, run: RunContext) -> None:
        self._previous = self._install()

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if self.received is not None:
            trainer.should_stop = True

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning's own SIGTERM handler (installed just before this hook, removed after fit)
        # would end fit with an exception at the next step: ours alone handles the signals.
        self._install()
        if self.received is not None:  # the signal came before fit: no step at all
            trainer.should_stop = True

    def run_metrics(self) -> dict:
        """``stopped_by_signal`` when a signal ended the run."""
        return {"stopped_by_signal": self.received.name} if self.received is not None else {}

    def _restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def on_run_end(self, run: RunContext, metrics: dict) -> None:
        self._restore()

    def on_run_failed(self, run: RunContext, error: BaseException) -> None:
        self._restore()

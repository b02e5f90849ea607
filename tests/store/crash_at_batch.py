"""``python tests/store/crash_at_batch.py N[:SIGNAL] [overrides...]``: minituner-train that signals itself at batch N.

The signal (SIGKILL unless named, e.g. ``13:SIGTERM``) comes from inside ``training_step`` of
the N-th training batch (counted over all epochs from 0), so it can land anywhere, including
inside a gradient-accumulation window, and the config stays exactly what the user would run (resuming compares configs).
"""

import os
import signal
import sys

from minituner.apps.train import main
from minituner.training.module import MiniGPTModule

KILL_AT, _, SIGNAL = sys.argv.pop(1).partition(":")
KILL_AT, SIGNAL = int(KILL_AT), signal.Signals[SIGNAL or "SIGKILL"]
_training_step = MiniGPTModule.training_step


def _crashing_step(self, batch, batch_idx):
    if self.trainer.fit_loop.epoch_loop.total_batch_idx == KILL_AT:
        os.kill(os.getpid(), SIGNAL)
    return _training_step(self, batch, batch_idx)


MiniGPTModule.training_step = _crashing_step

if __name__ == "__main__":
    main()

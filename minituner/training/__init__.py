"""Training: the LightningModule, metrics, schedules, and the run pipeline ``train(cfg)``."""

from minituner.training.checkpoint_plugin import SafeCheckpointIO
from minituner.training.evaluation import evaluate_on_test_split
from minituner.training.metrics import evaluation_metrics, relative_drift
from minituner.training.module import MiniGPTModule
from minituner.training.pipeline import RunInterrupted, train
from minituner.training.schedules import warmup_cosine

__all__ = [
    "MiniGPTModule",
    "RunInterrupted",
    "SafeCheckpointIO",
    "evaluate_on_test_split",
    "evaluation_metrics",
    "relative_drift",
    "train",
    "warmup_cosine",
]

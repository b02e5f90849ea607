"""Training: the LightningModule, metrics, schedules, run hooks, and the run pipeline ``train(cfg)``."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "pipeline": ["train", "RunInterrupted"],
        "module": ["MiniGPTModule"],
        "checkpoint_plugin": ["SafeCheckpointIO"],
        "metrics": ["evaluation_metrics", "relative_drift"],
        "evaluation": ["evaluate_on_test_split"],
        "schedules": ["warmup_cosine"],
        "run_hooks": ["RunContext", "RunHooks"],
    },
)

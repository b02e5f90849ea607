"""What a config *means*, as opposed to where its code lives: the basis of every identity.

The base cache key and the resume check compare configs. A ``_target_`` such as
``minituner.training.schedules.warmup_cosine`` names a function by its import path; moving a
module would then change every base's identity and refuse every resume, though nothing that
is computed changed. So identities keep only the callable's own name (``warmup_cosine``,
``AdamW``): renaming the function (a real change of meaning) still counts, moving it does not.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

# Keys that may differ between an interrupted run and its resumption (or a repeat of a run in its
# own directory): where things are written, how often checkpoints are taken and whether blocks are
# recomputed in backward (same gradients, bit for bit on the CPU), nothing that changes what is
# trained. The loggers' save_dir is the run directory: a run moved or copied elsewhere still resumes.
FREE_KEYS = (
    "resume",
    "paths",
    "model.activation_checkpointing",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "callbacks.checkpoint",
    "callbacks.progress_bar",
    "callbacks.config_tree",
    "logger.tensorboard.save_dir",
    "logger.csv.save_dir",
    "logger.wandb.save_dir",
    "logger.mlflow.tracking_uri",
)


def without_import_paths(value):
    """``value`` (a plain container from ``OmegaConf.to_container``) with each ``_target_`` cut to its last name."""
    if isinstance(value, dict):
        return {
            key: sub.rpartition(".")[2] if key == "_target_" and isinstance(sub, str) else without_import_paths(sub)
            for key, sub in value.items()
        }
    if isinstance(value, list):
        return [without_import_paths(item) for item in value]
    return value


def resumable_config(cfg: DictConfig) -> dict:
    """The resolved config as a plain dict, without the keys a resumed run may change or import paths."""
    plain = without_import_paths(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    for key in FREE_KEYS:
        *parents, leaf = key.split(".")
        node = plain
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return plain

"""What a config *means*, as opposed to where its code lives: the basis of every identity.

The base cache key and the resume check compare configs. A ``_target_`` such as
``minituner.training.schedules.warmup_cosine`` names a function by its import path; moving a
module would then change every base's identity and refuse every resume, though nothing that
is computed changed. So identities keep only the callable's own name (``warmup_cosine``,
``AdamW``): renaming the function (a real change of meaning) still counts, moving it does not.
"""

from __future__ import annotations


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

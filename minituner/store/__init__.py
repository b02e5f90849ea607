"""What is kept on disk: atomic writes, the base cache, checkpoints, resume, RNG state, provenance, cache keys."""

from minituner.store.artifacts import (
    exclusive_lock,
    sha256_file,
    write_atomic,
    write_directory_atomic,
    write_json_atomic,
)
from minituner.store.base_cache import BaseIdentity, LoadedBase, cache_entry, ensure_base, load_base, save_base
from minituner.store.checkpoint_io import (
    CheckpointError,
    load_checkpoint_dir,
    newest_valid_checkpoint,
    save_checkpoint_dir,
)
from minituner.store.keys import content_key
from minituner.store.provenance import git_state, host_info, package_versions
from minituner.store.resume import ResumeError, ResumePlan, plan_resume

__all__ = [
    "BaseIdentity",
    "CheckpointError",
    "LoadedBase",
    "ResumeError",
    "ResumePlan",
    "cache_entry",
    "content_key",
    "ensure_base",
    "exclusive_lock",
    "git_state",
    "host_info",
    "load_base",
    "load_checkpoint_dir",
    "newest_valid_checkpoint",
    "package_versions",
    "plan_resume",
    "save_base",
    "save_checkpoint_dir",
    "sha256_file",
    "write_atomic",
    "write_directory_atomic",
    "write_json_atomic",
]

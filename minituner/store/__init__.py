"""What is kept on disk: atomic writes, the base cache, checkpoints, resume, RNG state, provenance."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "artifacts": ["write_atomic", "write_json_atomic", "write_directory_atomic", "exclusive_lock", "sha256_file"],
        "base_cache": ["LoadedBase", "base_dir_for", "base_key", "ensure_base", "load_base", "save_base"],
        "checkpoint_io": ["CheckpointError", "save_checkpoint_dir", "load_checkpoint_dir", "newest_valid_checkpoint"],
        "resume": ["plan_resume", "resumable_config"],
        "provenance": ["git_state", "host_info", "package_versions"],
    },
)

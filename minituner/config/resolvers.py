"""The OmegaConf resolvers minituner's configs use (registered when ``minituner`` is imported)."""

from omegaconf import OmegaConf

from minituner.data.examples import example_file
from minituner.store.shipped import SHIPPED_DIR


def register_resolvers() -> None:
    """Register ``${example_file:...}``, ``${shipped_dir:}``, ``${run_dir:...}`` and ``${hydra_subdir:...}``."""
    # `${example_file:sentiment.jsonl}` in a config: the shipped example, wherever minituner is installed
    OmegaConf.register_new_resolver("example_file", example_file, replace=True)
    # `${shipped_dir:}`: the shipped base and reference adapter, wherever minituner is installed
    OmegaConf.register_new_resolver("shipped_dir", lambda: str(SHIPPED_DIR), replace=True)
    # hydra.run.dir / hydra.output_subdir: `resume=<run dir>` continues in that directory and keeps its .hydra/
    OmegaConf.register_new_resolver("run_dir", lambda resume, fresh: resume or fresh, replace=True)
    OmegaConf.register_new_resolver("hydra_subdir", lambda resume: None if resume else ".hydra", replace=True)

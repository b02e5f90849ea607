"""Configs: where the shipped ones live, typed nodes, the base a config needs, validation, identities.

Importing it registers minituner's OmegaConf resolvers, which the shipped configs use.
"""

from minituner.config.base_request import base_dir_for, base_identity, trains_base
from minituner.config.errors import ConfigError
from minituner.config.identity import resumable_config, without_import_paths
from minituner.config.nodes import lora_config, model_config
from minituner.config.resolvers import register_resolvers
from minituner.config.shipped import CONF_DIR, load_regime
from minituner.config.validation import validate_config

__all__ = [
    "CONF_DIR",
    "ConfigError",
    "base_dir_for",
    "base_identity",
    "load_regime",
    "lora_config",
    "model_config",
    "resumable_config",
    "trains_base",
    "validate_config",
    "without_import_paths",
]

register_resolvers()

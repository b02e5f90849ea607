"""Configs: where the shipped ones live, typed nodes, the schema, validation, identities, resolvers."""

from minituner._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "shipped": ["CONF_DIR", "load_regime"],
        "nodes": ["model_config", "lora_config"],
        "errors": ["ConfigError"],
        "validation": ["validate_config"],
        "identity": ["without_import_paths"],
    },
)

"""Where the shipped Hydra configs live, and how to read one of them as shipped."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

_PACKAGE = Path(__file__).resolve().parents[1]
# An installed wheel carries the configs inside the package (minituner/conf); a source checkout
# keeps them at the top of the repository (conf/), beside minituner/.
CONF_DIR = _PACKAGE / "conf" if (_PACKAGE / "conf").is_dir() else _PACKAGE.parent / "conf"


def load_regime(name: str) -> DictConfig:
    """``conf/regime/<name>.yaml`` as shipped, merged over the regime its ``defaults`` names."""
    regime = OmegaConf.load(CONF_DIR / "regime" / f"{name}.yaml")
    parents = [d for d in regime.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*(load_regime(parent) for parent in parents), regime)

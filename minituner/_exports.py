"""Each subpackage's public API, resolved on first use (PEP 562).

A subpackage's ``__init__`` names its public objects and the module each lives in. Importing
them eagerly would make importing any one module import all its siblings, and through them
other subpackages: modules depend on each other in one direction, but package-level imports of
everything would close that into cycles. So ``minituner.lora.LoRALinear`` imports
``minituner.lora.layer`` only when it is first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable


def lazy_exports(package: str, exports: dict[str, list[str]]) -> tuple[list[str], Callable[[str], object]]:
    """``__all__`` and a module ``__getattr__`` for ``package``.

    Args:
        package: The package's ``__name__``.
        exports: Module name (relative to the package) -> the public names it defines.
    """
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> object:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    return sorted(where), __getattr__

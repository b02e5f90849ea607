"""The models a generation compares: the base, each adapter on it, and each adapter merged into it.

Labels are the ones ``generations.jsonl`` uses: ``base``, ``adapter:<name>`` and ``merged:<name>``,
where ``<name>`` is the run directory's name for a run's ``adapter/`` (else the directory's own
name). With a quantization scheme the adapters go on a quantized copy of the base, as QLoRA
trained them, and the ``base`` column is that quantized base.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from minituner.lora.adapter_io import load_adapter
from minituner.lora.merge import merged_copy
from minituner.quant.codecs import NF4_BLOCK
from minituner.quant.linear import quantize_model
from minituner.store.base_cache import LoadedBase


@dataclass
class NamedModel:
    """A model under comparison and its label."""

    label: str
    model: nn.Module


def adapter_name(directory: Path) -> str:
    """``<run>`` for ``.../<run>/adapter``, else the directory's own name."""
    directory = Path(directory).resolve()
    return directory.parent.name if directory.name == "adapter" else directory.name


def _unique_names(directories: list[Path]) -> list[str]:
    names = [adapter_name(d) for d in directories]
    return [f"{n}#{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]


def comparison_models(
    base: LoadedBase,
    adapter_dirs: list[Path],
    quant: str = "none",
    merged: bool = False,
    allow_base_mismatch: bool = False,
    block_size: int = NF4_BLOCK,
) -> list[NamedModel]:
    """The base, then per adapter the adapter on the base (and, with ``merged``, its merged model).

    ``quant`` (with ``block_size`` values per NF4/int4 block) stores the frozen base quantized.

    On a quantized base the merged model is the adapter merged into the quantized weights and
    quantized again (``LoRALinear.merge``), so it only approximates the adapter's column.

    Raises:
        AdapterError: An adapter does not fit the base (``load_adapter``'s checks).
    """
    frozen = copy.deepcopy(base.model)
    if quant != "none":
        quantize_model(frozen, quant, check_dequantized=True, block_size=block_size)
    models = [NamedModel("base", frozen)]
    for directory, name in zip(adapter_dirs, _unique_names(adapter_dirs), strict=True):
        adapted = copy.deepcopy(frozen)
        load_adapter(adapted, Path(directory), base.weights_sha256, allow_base_mismatch)
        models.append(NamedModel(f"adapter:{name}", adapted))
        if merged:
            models.append(NamedModel(f"merged:{name}", merged_copy(adapted)))
    for named in models:
        named.model.eval()
    return models

"""Adapter checkpoints in PEFT's layout: ``adapter_config.json`` + ``adapter_model.safetensors``.

Keys are PEFT's (``base_model.model.<module>.lora_A.weight``, DoRA's magnitudes as
``base_model.model.<module>.lora_magnitude_vector``, an adapted layer's bias as
``base_model.model.<module>.base_layer.bias``), so ``peft.PeftModel.from_pretrained(MiniGPT(...), adapter_dir)`` loads
a minituner adapter. The base the adapter was trained on is recorded in PEFT's own fields:
``base_model_name_or_path`` (the base's cache name) and ``revision`` (``sha256:<hex>`` of the
base weights).

An adapter started by PiSSA, OLoRA or LoftQ was trained against changed frozen weights: the directory
also holds ``residual_base.safetensors`` (per adapted module, the fp32 weight its frozen layer is
built from, and the factors that left the original weight), and ``load_adapter`` puts those weights
in place. ``export.py`` turns such an adapter into a plain LoRA of the untouched base.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from minituner.lora.inject import INITS, LAYERS_PATTERN, LoRAConfig, inject_lora, model_mlp
from minituner.lora.layer import LoRALinear, lora_layers
from minituner.lora.residual_init import RESIDUAL_INITS, ResidualStart
from minituner.model.state_fit import fit_problems
from minituner.store.artifacts import open_artifact, sha256_file, write_directory_atomic, write_json_atomic

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
RESIDUAL_FILE = "residual_base.safetensors"
RESIDUAL_KEYS = ("frozen_weight", "removed_A", "removed_B")  # ResidualStart's fields a run must keep
PEFT_PREFIX = "base_model.model."

# PEFT's LoraConfig (releases 0.13 to 0.21), field by field. The fields minituner reads:
_READ_FIELDS = {
    "peft_type",
    "r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "layers_to_transform",
    "layers_pattern",
    "bias",
    "use_rslora",
    "use_dora",
}
# Where the adapter came from and how PEFT ran it: any value.
_INFO_FIELDS = {
    "task_type",
    "base_model_name_or_path",
    "revision",
    "inference_mode",
    "auto_mapping",
    "peft_version",
    "runtime_config",
}
# Features minituner cannot apply. PEFT writes each as null, false or empty when it is off (its default);
# any other value switches it on and the adapter is refused, naming it.
_FEATURES = {
    "fan_in_fan_out",
    "modules_to_save",
    "rank_pattern",
    "alpha_pattern",
    "exclude_modules",
    "megatron_config",
    "loftq_config",
    "eva_config",
    "corda_config",
    "trainable_token_indices",
    "layer_replication",
    "lora_bias",
    "target_parameters",
    "use_qalora",
    "alora_invocation_tokens",
    "arrow_config",
    "ensure_weight_tying",
    "kasa_config",
    "lora_ga_config",
    "monteclora_config",
    "velora_config",
    "use_bdlora",
}
# Initialisations that only shape the weights before training (the file holds the trained ones); the
# others (pissa, olora, loftq, corda...) also change the base weights, which a plain base lacks: minituner
# applies its own three when the directory holds the changed weights (RESIDUAL_FILE).
_INIT_WEIGHTS_OFF = (True, False, "gaussian")
# Settings of a feature (megatron_config's module, use_qalora's group size): they matter only when that
# feature is on, and PEFT writes them at any value.
_FEATURE_SETTINGS = {"megatron_core", "qalora_group_size"}


def _off(value: object) -> bool:
    """Whether a PEFT field's value leaves its feature off: null, false or empty."""
    return value is None or value is False or (isinstance(value, str | list | dict) and not value)


class AdapterError(ValueError):
    """An adapter directory that cannot be used; the message says exactly why."""


def _peft_key(name: str) -> str:
    # Our module tree mirrors PEFT's (``q_proj.base_layer``, ``q_proj.lora_A``), so PEFT's key is
    # our parameter name under PEFT's model prefix.
    return PEFT_PREFIX + name


def adapter_state_dict(model: nn.Module, bias: str = "none") -> dict[str, torch.Tensor]:
    """The tensors an adapter checkpoint holds, under PEFT's key names.

    Args:
        model: A model with LoRA layers.
        bias: The LoRA bias mode; ``lora_only`` / ``all`` add the biases that trained.
    """
    state = {}
    for name, layer in lora_layers(model).items():
        for key, param in layer.adapter_parameters().items():
            state[_peft_key(f"{name}.{key}")] = param.detach()
        if bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
            state[_peft_key(f"{name}.base_layer.bias")] = layer.base_layer.bias.detach()
    if bias == "all":
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                state[_peft_key(name)] = param.detach()
    return {k: v.contiguous().cpu() for k, v in state.items()}


def adapter_config_dict(config: LoRAConfig, base_name: str, base_sha256: str, mlp: str = "gelu") -> dict:
    """``adapter_config.json`` content with PEFT's field names (``mlp``: the model's MLP kind, for the presets)."""
    return {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_name,
        "revision": f"sha256:{base_sha256}",
        "inference_mode": True,
        "r": config.r,
        "lora_alpha": config.alpha,
        "lora_dropout": config.dropout,
        "target_modules": config.expanded_targets(mlp),
        "layers_to_transform": config.layers_to_transform,
        "layers_pattern": LAYERS_PATTERN if config.layers_to_transform is not None else None,
        "bias": config.bias,
        "use_rslora": config.use_rslora,
        "fan_in_fan_out": False,
        "modules_to_save": None,
        "init_lora_weights": True if config.init == "default" else config.init,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_dora": config.dora,
    }


def save_adapter(
    model: nn.Module,
    directory: Path,
    config: LoRAConfig,
    base_name: str,
    base_sha256: str,
    starts: dict[str, ResidualStart] | None = None,
) -> str:
    """Write ``directory`` with both adapter files (and the residual weights of ``starts``), atomically as a whole.

    See ``write_directory_atomic``: a crash leaves the previous adapter or the new one.

    Returns:
        The SHA-256 of ``adapter_model.safetensors``.
    """
    directory = Path(directory)

    def fill(staging: Path) -> None:
        save_file(adapter_state_dict(model, config.bias), str(staging / WEIGHTS_FILE))
        config_dict = adapter_config_dict(config, base_name, base_sha256, model_mlp(model))
        write_json_atomic(staging / CONFIG_FILE, config_dict)
        if starts:
            residual = {
                f"{name}.{key}": getattr(start, key).contiguous().cpu()
                for name, start in starts.items()
                for key in RESIDUAL_KEYS
            }
            save_file(residual, str(staging / RESIDUAL_FILE))

    write_directory_atomic(directory, fill, "adapter")
    return sha256_file(directory / WEIGHTS_FILE)


@dataclass
class Adapter:
    """An adapter read from disk and checked on its own."""

    directory: Path
    config: LoRAConfig
    raw_config: dict
    tensors: dict[str, torch.Tensor]
    sha256: str
    residual: dict[str, dict[str, torch.Tensor]] | None = None  # RESIDUAL_KEYS' tensors by module name

    @property
    def base_sha256(self) -> str | None:
        """SHA-256 of the base weights the adapter was trained on, when recorded."""
        revision = self.raw_config.get("revision") or ""
        return revision.removeprefix("sha256:") if revision.startswith("sha256:") else None


def _config_problems(raw: dict) -> list[str]:
    """Every reason the adapter config cannot be applied: wrong types, features switched on, missing fields."""
    problems = []
    known = _READ_FIELDS | _INFO_FIELDS | _FEATURES | _FEATURE_SETTINGS | {"init_lora_weights"}
    for key in sorted(set(raw) - known):  # a field of a newer PEFT: fine while its feature is off
        if not _off(raw[key]):
            problems.append(f"unknown field {key!r}={raw[key]!r} (a newer PEFT's feature, switched on)")
    for key in ("base_model_name_or_path", "revision", "task_type"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            problems.append(f"{key}={raw[key]!r} is not allowed: must be a string or null")
    if raw.get("peft_type") != "LORA":
        problems.append(f"peft_type={raw.get('peft_type')!r}, only 'LORA' is supported")
    for key in sorted(_FEATURES):
        if not _off(raw.get(key)):
            problems.append(f"{key}={raw[key]!r} is a PEFT feature minituner does not support")
    init = raw.get("init_lora_weights", True)  # PEFT's default
    if not any(init is off or (isinstance(off, str) and init == off) for off in (*_INIT_WEIGHTS_OFF, *RESIDUAL_INITS)):
        problems.append(
            f"init_lora_weights={init!r} is a PEFT initialisation that also changes the base weights, "
            f"which minituner does not support (allowed: {[*_INIT_WEIGHTS_OFF, *RESIDUAL_INITS]})"
        )
    for key in ("r", "lora_alpha", "target_modules"):
        if key not in raw:
            problems.append(f"missing field {key!r}")
    return problems


def read_adapter(directory: Path) -> Adapter:
    """Read and check an adapter directory on its own (no model involved).

    Raises:
        AdapterError: Missing or unreadable files, unknown or unsupported config fields,
            invalid LoRA values, a truncated or corrupt safetensors file, NaN/Inf tensors.
    """
    directory, raw = open_artifact(directory, "adapter", (CONFIG_FILE, WEIGHTS_FILE), CONFIG_FILE, AdapterError)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    problems = _config_problems(raw)
    if problems:
        raise AdapterError(f"{config_path}: " + "; ".join(problems))
    config = LoRAConfig(
        r=raw["r"],
        alpha=raw["lora_alpha"],
        dropout=raw.get("lora_dropout", 0.0),
        target_modules=raw["target_modules"],
        layers_to_transform=raw.get("layers_to_transform"),
        bias=raw.get("bias", "none"),
        use_rslora=raw.get("use_rslora", False),
        dora=raw.get("use_dora") or False,
        init=_init_name(raw.get("init_lora_weights", True)),
    )
    if config.problems():
        raise AdapterError(f"{config_path}: " + "; ".join(config.problems()))
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise AdapterError(f"{weights_path} is truncated or corrupt: {error}") from error
    not_float = sorted(k for k, t in tensors.items() if not t.is_floating_point())
    if not_float:
        raise AdapterError(f"{weights_path} holds tensors that are not floating point: {not_float}")
    bad = sorted(k for k, t in tensors.items() if not torch.isfinite(t).all())
    if bad:
        raise AdapterError(f"{weights_path} holds NaN/Inf values in {bad}")
    # the rank in the config must be the tensors' (so a wrong r never sizes the layers that get injected)
    ranks = {
        k: t.shape[0] if ".lora_A." in k else t.shape[-1]
        for k, t in tensors.items()
        if (".lora_A." in k or ".lora_B." in k) and t.dim() == 2
    }
    wrong = sorted(k for k, rank in ranks.items() if rank != config.r)
    if wrong or any(t.dim() != 2 for k, t in tensors.items() if ".lora_A." in k or ".lora_B." in k):
        raise AdapterError(
            f"{config_path}: r={config.r}, but the LoRA tensors of {weights_path.name} are not of that "
            f"rank (2-D, r rows in lora_A, r columns in lora_B): {wrong or 'not 2-D'}"
        )
    residual = _read_residual(directory, config) if config.init in RESIDUAL_INITS else None
    return Adapter(directory, config, raw, tensors, sha256_file(weights_path), residual)


def _init_name(init: object) -> str:
    """``LoRAConfig.init`` for PEFT's ``init_lora_weights`` (True, False and unknown values: ``default``)."""
    return init if isinstance(init, str) and init in INITS else "default"


def _read_residual(directory: Path, config: LoRAConfig) -> dict[str, dict[str, torch.Tensor]]:
    """The frozen weights and removed factors of a PiSSA / OLoRA / LoftQ adapter, by module name."""
    path = directory / RESIDUAL_FILE
    if not path.is_file():
        raise AdapterError(
            f"{directory / CONFIG_FILE}: init_lora_weights={config.init!r} changes the base weights, and "
            f"{path} (the weights it was trained against) is missing; a PEFT adapter of this kind must first be "
            "converted to a plain LoRA (PEFT's path_initial_model_for_weight_conversion)"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise AdapterError(f"{path} is truncated or corrupt: {error}") from error
    names = sorted({key.rsplit(".", 1)[0] for key in tensors})
    missing = sorted(f"{n}.{k}" for n in names for k in RESIDUAL_KEYS if f"{n}.{k}" not in tensors)
    bad = sorted(k for k, t in tensors.items() if not t.is_floating_point() or not torch.isfinite(t).all())
    if missing or bad:
        raise AdapterError(f"{path}: missing {missing}, not finite floating point {bad}")
    return {name: {key: tensors[f"{name}.{key}"] for key in RESIDUAL_KEYS} for name in names}


def load_adapter(
    model: nn.Module,
    directory: Path,
    base_sha256: str | None = None,
    allow_base_mismatch: bool = False,
    put_residual: bool = True,
) -> Adapter:
    """Apply an adapter directory to ``model`` and load its weights.

    A model without LoRA layers gets them injected from the adapter's config; a model that
    already has them must have the same rank and targets. Every tensor must find its place
    with its shape, and every adapter parameter of the model must be in the file.

    Args:
        model: A MiniGPT, plain or already wrapped with LoRA.
        directory: The adapter directory.
        base_sha256: SHA-256 of the model's base weights, checked against the adapter's record.
        allow_base_mismatch: Load even when the adapter was trained on another base.
        put_residual: For a PiSSA / OLoRA / LoftQ adapter, replace the adapted layers' frozen weights by
            the ones it was trained against (False: the caller has put them in place, e.g. rounded).

    Raises:
        AdapterError: Naming each mismatch (base hash, rank, targets, missing / unexpected
            keys, shapes). The model is left untouched when the error is about the file.
    """
    adapter = read_adapter(directory)
    recorded = adapter.base_sha256
    if base_sha256 and recorded and recorded != base_sha256 and not allow_base_mismatch:
        raise AdapterError(
            f"adapter {directory} was trained on base sha256:{recorded} "
            f"({adapter.raw_config.get('base_model_name_or_path')}), but this base is "
            f"sha256:{base_sha256}; pass allow_base_mismatch=True to load it anyway"
        )
    existing = _lora_layers_for(model, adapter)
    targets = {}
    for name, layer in existing.items():
        targets.update({_peft_key(f"{name}.{k}"): p for k, p in layer.adapter_parameters().items()})
    params = {_peft_key(n): p for n, p in model.named_parameters()}
    # Besides its LoRA tensors, a file may hold base parameters the adapter trains (lora.bias).
    expected = {k: p.shape for k, p in params.items() if k in targets or k in adapter.tensors}
    problems = fit_problems(expected, {k: t.shape for k, t in adapter.tensors.items()})
    if problems:
        raise AdapterError(f"adapter {directory} does not fit this model: " + "; ".join(problems))
    if adapter.residual is not None and put_residual:
        _put_residual(existing, adapter)
    with torch.no_grad():
        for key, tensor in adapter.tensors.items():
            params[key].copy_(tensor)
    return adapter


def _lora_layers_for(model: nn.Module, adapter: Adapter) -> dict[str, LoRALinear]:
    """The model's LoRA layers: injected from the adapter's config, or the existing ones if of its rank."""
    existing = lora_layers(model)
    if not existing:
        try:
            inject_lora(model, adapter.config)
        except ValueError as error:  # targets that match nothing or a module that is not linear
            raise AdapterError(f"{adapter.directory / CONFIG_FILE}: {error}") from error
        return lora_layers(model)
    problems = [
        f"{name}: model has r={layer.r}, adapter has r={adapter.config.r}"
        for name, layer in existing.items()
        if layer.r != adapter.config.r
    ]
    if problems:
        raise AdapterError(f"rank mismatch loading {adapter.directory}: " + "; ".join(problems))
    return existing


def _put_residual(layers: dict[str, LoRALinear], adapter: Adapter) -> None:
    """Replace the frozen weights of the adapted layers by the ones the adapter was trained against."""
    problems = fit_problems(
        {n: (layer.out_features, layer.in_features) for n, layer in layers.items()},
        {n: tensors["frozen_weight"].shape for n, tensors in adapter.residual.items()},
    )
    if problems:
        raise AdapterError(f"{adapter.directory / RESIDUAL_FILE} does not fit this model: " + "; ".join(problems))
    for name, layer in layers.items():
        layer.set_frozen_weight(adapter.residual[name]["frozen_weight"])

"""Putting LoRA layers into a model: which modules, which layers, what stays frozen."""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from minituner.lora.layer import LoRALinear, lora_layers
from minituner.lora.residual_init import RESIDUAL_INITS, ResidualStart

log = logging.getLogger(__name__)

ATTENTION_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP_LINEARS = {"gelu": ["fc_in", "fc_out"], "swiglu": ["gate_proj", "up_proj", "down_proj"]}


def target_presets(mlp: str = "gelu") -> dict[str, list[str]]:
    """The ``target_modules`` presets, as module names of a model whose MLP is ``mlp``."""
    return {
        "attn_qv": ["q_proj", "v_proj"],
        "attn": list(ATTENTION_LINEARS),
        "mlp": list(MLP_LINEARS[mlp]),
        "all_linear": ATTENTION_LINEARS + MLP_LINEARS[mlp],
    }


TARGET_PRESETS = target_presets()
BIAS_MODES = ("none", "lora_only", "all")
# default / gaussian: lora_A kaiming-uniform or normal with std 1/r (PEFT's "gaussian"), B = 0;
# pissa / olora / loftq also change the frozen weights (residual_init.py)
INITS = ("default", "gaussian", *RESIDUAL_INITS)
LAYERS_PATTERN = "blocks"  # MiniGPT's ModuleList of transformer blocks


@dataclass
class LoRAConfig:
    """What to adapt and how.

    Attributes:
        r: Rank (> 0).
        alpha: Scale numerator (> 0); the update is scaled by alpha / r.
        dropout: Dropout on the LoRA path, in [0, 1).
        target_modules: A preset name (``attn_qv``, ``attn``, ``mlp``, ``all_linear``), a list
            of module names or name suffixes (``q_proj``, ``blocks.0.attn.q_proj``), or any
            other string, taken as a regex that must match a full module name.
        layers_to_transform: Block indices to adapt; None adapts every block.
        bias: ``none`` (biases frozen), ``lora_only`` (biases of adapted layers train) or
            ``all`` (every bias trains).
        use_rslora: Scale by alpha / sqrt(r).
        dora: DoRA: a trained magnitude per output feature times the normalised direction
            ``W + scaling * B A`` (PEFT's ``use_dora``).
        init: How the adapter starts: ``default`` (``lora_A`` kaiming-uniform) or ``gaussian`` (std 1/r),
            ``lora_B`` zero, so the adapted model starts equal to its base; or ``pissa``, ``olora``,
            ``loftq`` (quantized bases), which take A and B from the base weight and freeze the rest
            (``residual_init.py``).
        loftq_iters: LoftQ's rounds of quantize-and-refit (>= 1).
        seed: Seed of the adapter's random init.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: str | list[str] = "all_linear"
    layers_to_transform: list[int] | None = None
    bias: str = "none"
    use_rslora: bool = False
    dora: bool = False
    init: str = "default"
    loftq_iters: int = 1
    seed: int = 0

    def problems(self) -> list[str]:
        """Every invalid value, as ``lora.<key>=<value> ...: allowed ...`` lines."""
        found = []
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            found.append(f"lora.r={self.r!r} is not allowed: must be a positive integer")
        if not _is_number(self.alpha) or self.alpha <= 0:
            found.append(f"lora.alpha={self.alpha!r} is not allowed: must be a number > 0")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            found.append(f"lora.dropout={self.dropout!r} is not allowed: must be in [0, 1)")
        if not isinstance(self.init, str) or self.init not in INITS:
            found.append(f"lora.init={self.init!r} is not allowed: must be one of {list(INITS)}")
        if not isinstance(self.loftq_iters, int) or isinstance(self.loftq_iters, bool) or self.loftq_iters < 1:
            found.append(f"lora.loftq_iters={self.loftq_iters!r} is not allowed: must be an integer >= 1")
        if not isinstance(self.bias, str) or self.bias not in BIAS_MODES:
            found.append(f"lora.bias={self.bias!r} is not allowed: must be one of {list(BIAS_MODES)}")
        for key in ("use_rslora", "dora"):
            if not isinstance(getattr(self, key), bool):
                found.append(f"lora.{key}={getattr(self, key)!r} is not allowed: must be true or false")
        layers = self.layers_to_transform
        indices = isinstance(layers, list) and all(
            isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in layers
        )
        if layers is not None and (not indices or not layers):
            found.append(
                f"lora.layers_to_transform={layers!r} is not allowed: must be null (every block) or a "
                "non-empty list of block indices"
            )
        targets = self.target_modules
        malformed = not isinstance(targets, str | list) or (
            isinstance(targets, list) and not all(isinstance(t, str) and t for t in targets)
        )
        if malformed or not targets:
            found.append(
                f"lora.target_modules={self.target_modules!r} is not allowed: name a preset "
                f"{sorted(TARGET_PRESETS)}, a list of module names or a regex"
            )
        elif isinstance(self.target_modules, str) and self.target_modules not in TARGET_PRESETS:
            try:
                re.compile(self.target_modules)
            except re.error as error:
                found.append(f"lora.target_modules={self.target_modules!r} is not a valid regex: {error}")
        return found

    def expanded_targets(self, mlp: str = "gelu") -> str | list[str]:
        """Presets replaced by their module names (in a model whose MLP is ``mlp``); lists and regexes as given."""
        if isinstance(self.target_modules, str):
            preset = target_presets(mlp).get(self.target_modules)
            return list(preset) if preset else self.target_modules
        return list(self.target_modules)

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _layer_index(name: str) -> int | None:
    match = re.search(rf"(?:^|\.){LAYERS_PATTERN}\.(\d+)\.", name)
    return int(match.group(1)) if match else None


def matches_target(name: str, targets: str | list[str]) -> bool:
    """Whether module ``name`` is selected: full regex match, or exact name / dotted suffix."""
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in targets)


def model_mlp(model: nn.Module) -> str:
    """The MLP kind of a MiniGPT (``gelu`` for any other module)."""
    return getattr(getattr(model, "config", None), "mlp", "gelu")


def select_targets(model: nn.Module, config: LoRAConfig) -> list[str]:
    """Names of the linear modules that ``config`` adapts.

    Raises:
        ValueError: Nothing matched (the error lists the linear modules that exist), or a
            matched module is not a linear layer.
    """
    targets = config.expanded_targets(model_mlp(model))
    linear_names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    chosen = []
    for name, module in model.named_modules():
        if not name or isinstance(module, LoRALinear) or not matches_target(name, targets):
            continue
        if config.layers_to_transform is not None and _layer_index(name) not in config.layers_to_transform:
            continue
        if not isinstance(module, nn.Linear) and not hasattr(module, "in_features"):
            raise ValueError(
                f"lora.target_modules={config.target_modules!r} matches {name!r}, a "
                f"{type(module).__name__}, which is not a linear layer; linear layers: {linear_names}"
            )
        chosen.append(name)
    if not chosen:
        raise ValueError(
            f"lora.target_modules={config.target_modules!r} (layers_to_transform="
            f"{config.layers_to_transform}) matches no module; the linear modules are: {linear_names}"
        )
    return chosen


def inject_lora(model: nn.Module, config: LoRAConfig, starts: dict[str, ResidualStart] | None = None) -> list[str]:
    """Wrap the targeted linears of ``model`` in ``LoRALinear`` and freeze everything else.

    The adapters are initialised from a generator seeded with ``config.seed`` in module order,
    so the same config always gives the same adapter, whatever the global RNG state. A layer
    named in ``starts`` (PiSSA, OLoRA, LoftQ, whose frozen weights were already written) starts at
    its factors instead.

    Returns:
        The adapted module names.
    """
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    names = select_targets(model, config)
    generator = torch.Generator().manual_seed(config.seed)
    for name in names:
        layer = LoRALinear(
            model.get_submodule(name),
            r=config.r,
            alpha=config.alpha,
            dropout=config.dropout,
            use_rslora=config.use_rslora,
            generator=generator,
            dora=config.dora,
            gaussian_init=config.init == "gaussian",
        )
        if starts and name in starts:
            layer.start_from(starts[name].lora_A, starts[name].lora_B)
        model.set_submodule(name, layer)
    mark_trainable(model, config.bias)
    log.info("LoRA trainable parameters:\n%s", trainable_summary(model))
    return names


def mark_trainable(model: nn.Module, bias: str) -> None:
    """Freeze all but the adapters (and the biases that ``bias`` names)."""
    for param in model.parameters():
        param.requires_grad_(False)
    for layer in lora_layers(model).values():
        for param in layer.adapter_parameters().values():
            param.requires_grad_(True)
        if bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
            layer.base_layer.bias.requires_grad_(True)
    if bias == "all":
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.requires_grad_(True)


def trainable_summary(model: nn.Module) -> str:
    """A small table: trainable parameters per adapted module, then the totals."""
    lines = [f"{'module':<28} {'trainable':>10}"]
    for name, layer in lora_layers(model).items():
        count = sum(p.numel() for p in layer.parameters() if p.requires_grad)
        lines.append(f"{name:<28} {count:>10,}")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # a quantized layer keeps its weight as codes (buffers) and reports how many weights they hold
    total = sum(p.numel() for p in model.parameters()) + sum(getattr(m, "weight_numel", 0) for m in model.modules())
    lines.append(f"trainable {trainable:,} of {total:,} parameters ({100 * trainable / total:.2f}%)")
    return "\n".join(lines)

"""The memory calculator: parameter counts and the four-bucket footprint, from a shape alone.

Nothing is instantiated, so the same arithmetic answers for MiniGPT and for a 7B-parameter
shape. The four buckets (weights / gradients / Adam state / activations) follow the seeds'
memory model:

* ``fp32`` precision (how minituner trains on the CPU, and what Lightning's ``bf16-mixed``
  stores): every parameter 4 bytes, gradients 4 bytes per trainable parameter. With a
  half-precision frozen base (``base_dtype``, LoRA only) the frozen dense parameters take 2
  bytes each while adapters, their gradients and Adam stay fp32.
* ``fp16_mixed`` (the production recipe): frozen weights in fp16, trainable weights in fp16
  plus an fp32 master copy, fp16 gradients.
* Adam keeps two fp32 moments per trainable parameter and one fp32 ``step`` scalar per
  trainable tensor (PyTorch's AdamW state), so the optimizer figure is exact.
* A quantized frozen linear costs exactly the bytes of its codes and scales (its bias stays a
  frozen dense parameter); the tied LM head / embedding and the LayerNorms are never quantized.
* Activations are an estimate: ``batch x seq x d_model x n_layer x 16`` bytes (the seeds'
  rule of thumb), not a measurement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from minituner.lora.inject import LoRAConfig, matches_target
from minituner.model.minigpt import MiniGPTConfig
from minituner.quant.codecs import NF4_BLOCK, scale_block_size

PRECISIONS = ("fp32", "fp16_mixed")
ACTIVATION_BYTES_PER_VALUE = 16  # per residual value per layer: the seeds' rough estimate
ADAM_STEP_BYTES = 4  # one fp32 `step` tensor per parameter tensor
BASE_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Footprint:
    """Predicted parameter counts and bytes of one training regime."""

    label: str
    trainable_params: int
    frozen_params: int
    weights: int
    grads: int
    adam: int
    activations: int

    @property
    def total(self) -> int:
        """All four buckets together."""
        return self.weights + self.grads + self.adam + self.activations

    def to_dict(self) -> dict:
        """Plain-dict form with the total."""
        return asdict(self) | {"total": self.total}


def block_linears(config: MiniGPTConfig) -> dict[str, tuple[int, int]]:
    """Every transformer-block linear of a MiniGPT of this shape: name -> (out, in) features."""
    d, ff = config.d_model, config.d_ff
    shapes = {}
    for i in range(config.n_layer):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"blocks.{i}.attn.{proj}"] = (d, d)
        shapes[f"blocks.{i}.mlp.fc_in"] = (ff, d)
        shapes[f"blocks.{i}.mlp.fc_out"] = (d, ff)
    return shapes


def adapted_linears(config: MiniGPTConfig, lora: LoRAConfig) -> list[str]:
    """The block linears that ``lora`` adapts, chosen by the same rules as injection."""
    targets = lora.expanded_targets()
    return [
        name
        for name in block_linears(config)
        if matches_target(name, targets)
        and (lora.layers_to_transform is None or int(name.split(".")[1]) in lora.layers_to_transform)
    ]


def quantized_weight_bytes(out_features: int, in_features: int, scheme: str) -> int:
    """Exact bytes of one linear weight stored under ``scheme`` (codes plus scales)."""
    numel = out_features * in_features
    if scheme == "none":
        raise ValueError("quantized_weight_bytes needs a quantization scheme, got 'none'")
    if scheme == "int8":
        return numel + 4 * out_features  # int8 codes + one fp32 scale per row
    blocks = numel // NF4_BLOCK
    packed = numel // 2  # two 4-bit codes per byte
    if scheme == "nf4_dq":  # int8 scale codes + one fp32 scale per scale block + the fp32 mean
        return packed + blocks + 4 * (blocks // scale_block_size(blocks)) + 4
    if scheme in ("nf4", "int4"):
        return packed + 4 * blocks  # one fp32 scale per block of 64
    raise ValueError(f"quant scheme {scheme!r} is not one of ['none', 'nf4', 'nf4_dq', 'int4', 'int8']")


def _check_settings(lora: LoRAConfig | None, quant: str, precision: str, base_dtype: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one of {list(PRECISIONS)}")
    if base_dtype not in BASE_DTYPE_BYTES:
        raise ValueError(f"base_dtype={base_dtype!r} is not one of {list(BASE_DTYPE_BYTES)}")
    if base_dtype != "float32" and lora is None:
        raise ValueError("a half-precision base is frozen: full fine-tuning cannot use base_dtype != 'float32'")
    if quant != "none" and lora is None:
        raise ValueError("a quantized base is frozen: full fine-tuning cannot use quant != 'none'")


def predict(
    config: MiniGPTConfig,
    label: str,
    lora: LoRAConfig | None = None,
    quant: str = "none",
    precision: str = "fp32",
    batch_size: int = 16,
    seq_len: int = 32,
    base_dtype: str = "float32",
) -> Footprint:
    """The four-bucket footprint of training a MiniGPT of ``config``'s shape.

    Args:
        config: Model shape.
        label: Row name.
        lora: Adapters to train; None trains every parameter (full fine-tuning).
        quant: Storage scheme of the frozen block linears (needs ``lora``).
        precision: ``fp32`` or ``fp16_mixed`` (see the module docstring).
        batch_size: Sequences per batch, for the activation estimate.
        seq_len: Tokens per sequence, for the activation estimate.
        base_dtype: Storage of the frozen base's dense parameters under ``fp32`` precision:
            ``float32``, ``bfloat16`` or ``float16`` (needs ``lora``).
    """
    _check_settings(lora, quant, precision, base_dtype)
    linears = block_linears(config)
    biases = config.n_layer * (5 * config.d_model + config.d_ff) if config.bias else 0
    dense = config.vocab_size * config.d_model + config.block_size * config.d_model  # embeddings
    dense += (2 * config.n_layer + 1) * 2 * config.d_model + biases  # LayerNorms and biases
    linear_weights = sum(o * i for o, i in linears.values())

    if lora is None:
        trainable, frozen, frozen_bytes = dense + linear_weights, 0, 0
        tensors = _dense_tensor_count(config) + len(linears) * (2 if config.bias else 1)
    else:
        adapted = adapted_linears(config, lora)
        trainable = sum(lora.r * (o + i) for o, i in (linears[n] for n in adapted))
        tensors = 2 * len(adapted)
        trained_biases = _trained_bias_numels(config, lora, adapted)
        trainable += sum(trained_biases)
        tensors += len(trained_biases)
        frozen = dense + linear_weights - sum(trained_biases)
        dense_bytes = 2 if precision == "fp16_mixed" else BASE_DTYPE_BYTES[base_dtype]
        if quant == "none":
            frozen_bytes = frozen * dense_bytes
        else:
            quantized = sum(quantized_weight_bytes(o, i, quant) for o, i in linears.values())
            frozen_bytes = (frozen - linear_weights) * dense_bytes + quantized

    weight_bytes, grad_bytes = (6, 2) if precision == "fp16_mixed" else (4, 4)  # fp16 + fp32 master
    return Footprint(
        label=label,
        trainable_params=trainable,
        frozen_params=frozen,
        weights=frozen_bytes + trainable * weight_bytes,
        grads=trainable * grad_bytes,
        adam=8 * trainable + ADAM_STEP_BYTES * tensors,
        activations=batch_size * seq_len * config.d_model * config.n_layer * ACTIVATION_BYTES_PER_VALUE,
    )


def _dense_tensor_count(config: MiniGPTConfig) -> int:
    """Parameter tensors that are not block-linear weights or biases: embeddings and LayerNorms."""
    return 2 + 2 * (2 * config.n_layer + 1)


def _trained_bias_numels(config: MiniGPTConfig, lora: LoRAConfig, adapted: list[str]) -> list[int]:
    """Sizes of the bias vectors that ``lora.bias`` makes trainable.

    ``lora_only``: the biases of the adapted linears. ``all``: every bias of the model, the
    LayerNorms' included (injection trains every parameter whose name ends in ``.bias``).
    """
    linears = block_linears(config)
    if lora.bias == "none":
        return []
    names = adapted if lora.bias == "lora_only" else list(linears)
    sizes = [linears[n][0] for n in names] if config.bias else []
    if lora.bias == "all":
        sizes += [config.d_model] * (2 * config.n_layer + 1)
    return sizes


def fits(footprint: Footprint, memory_bytes: int) -> bool:
    """Whether the predicted footprint fits in ``memory_bytes`` of device memory."""
    return footprint.total <= memory_bytes

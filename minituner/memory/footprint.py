"""The memory calculator: parameter counts and the four-bucket footprint, from a shape alone.

Nothing is instantiated, so the same arithmetic answers for MiniGPT and for a 7B-parameter
shape. The four buckets (weights / gradients / Adam state / activations):

* ``fp32`` precision (how minituner trains on the CPU, and what Lightning's ``bf16-mixed``
  stores): every parameter 4 bytes, gradients 4 bytes per trainable parameter. With a
  half-precision frozen base (``base_dtype``, LoRA only) the frozen dense parameters take 2
  bytes each while adapters, their gradients and Adam stay fp32.
* ``fp16_mixed`` (the production recipe): frozen weights in fp16, trainable weights in fp16
  plus an fp32 master copy, fp16 gradients; activations in half precision.
* ``bf16_true`` (torchtune's and LitGPT's ``bf16-true``): weights, adapters, gradients and
  both Adam moments in bf16; activations in bf16.
* Adam keeps two fp32 moments per trainable parameter and one fp32 ``step`` scalar per
  trainable tensor (PyTorch's AdamW state), so the optimizer figure is exact.
* A quantized frozen linear costs exactly the bytes of its codes and scales (its bias stays a
  frozen dense parameter); the tied LM head / embedding and the LayerNorms are never quantized.
* Activations are what autograd saves for backward, counted exactly from the architecture
  (``minituner.memory.activations``), with and without activation checkpointing. The seeds' rule
  of thumb, ``batch x seq x d_model x n_layer x 16`` bytes, is kept beside them for comparison.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from minituner.lora.inject import LoRAConfig
from minituner.memory.activations import TrainingSetup, saved_activations
from minituner.memory.peak import step_peak
from minituner.memory.shapes import adapted_linears, block_linears, norm_tensors
from minituner.model.minigpt import MiniGPTConfig, count_parameters
from minituner.quant.codecs import NF4_BLOCK, scale_block_size

PRECISIONS = ("fp32", "fp16_mixed", "bf16_true")
RULE_OF_THUMB_BYTES_PER_VALUE = 16  # per residual value per layer: the seeds' rough estimate
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
    activations_checkpointed: int
    rule_of_thumb_activations: int
    peak: int
    peak_checkpointed: int

    @property
    def total(self) -> int:
        """All four buckets together (activations without checkpointing)."""
        return self.weights + self.grads + self.adam + self.activations

    @property
    def total_checkpointed(self) -> int:
        """All four buckets with each block recomputed in backward."""
        return self.total - self.activations + self.activations_checkpointed

    def to_dict(self) -> dict:
        """Plain-dict form with the totals."""
        return asdict(self) | {"total": self.total, "total_checkpointed": self.total_checkpointed}


def quantized_weight_bytes(out_features: int, in_features: int, scheme: str, block: int = NF4_BLOCK) -> int:
    """Exact bytes of one linear weight stored under ``scheme`` in blocks of ``block`` values (codes plus scales)."""
    numel = out_features * in_features
    if scheme == "none":
        raise ValueError("quantized_weight_bytes needs a quantization scheme, got 'none'")
    if scheme == "int8":
        return numel + 4 * out_features  # int8 codes + one fp32 scale per row
    blocks = numel // block
    packed = numel // 2  # two 4-bit codes per byte
    if scheme == "nf4_dq":  # int8 scale codes + one fp32 scale per scale block + the fp32 mean
        return packed + blocks + 4 * (blocks // scale_block_size(blocks)) + 4
    if scheme in ("nf4", "int4"):
        return packed + 4 * blocks  # one fp32 scale per block
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
    attention: str = "sdpa",
    device: str = "cpu",
    block_size: int = NF4_BLOCK,
) -> Footprint:
    """The four-bucket footprint of training a MiniGPT of ``config``'s shape.

    Args:
        config: Model shape.
        label: Row name.
        lora: Adapters to train; None trains every parameter (full fine-tuning).
        quant: Storage scheme of the frozen block linears (needs ``lora``).
        precision: ``fp32``, ``fp16_mixed`` or ``bf16_true`` (see the module docstring).
        batch_size: Sequences per batch.
        seq_len: Tokens per sequence.
        base_dtype: Storage of the frozen base's dense parameters under ``fp32`` precision:
            ``float32``, ``bfloat16`` or ``float16`` (needs ``lora``).
        attention: ``sdpa`` (fused kernel) or ``eager`` (keeps the attention maps).
        device: ``cpu`` or ``cuda`` (see ``minituner.memory.activations``).
        block_size: Values per NF4 / int4 block of a quantized base.
    """
    _check_settings(lora, quant, precision, base_dtype)
    trainable, frozen, frozen_bytes, tensors = _parameters(config, lora, (quant, block_size), precision, base_dtype)
    # bytes per trainable parameter: weight (fp16_mixed: fp16 + fp32 master), gradient, Adam's two moments
    weight_bytes, grad_bytes, moment_bytes = {"fp32": (4, 4, 8), "fp16_mixed": (6, 2, 8), "bf16_true": (2, 2, 4)}[
        precision
    ]
    setup = TrainingSetup(
        lora=lora,
        quantized=quant != "none",
        base_bytes=BASE_DTYPE_BYTES[base_dtype] if precision == "fp32" else 2,
        adapter_bytes=4 if precision == "fp32" else 2,
        attention=attention,
        device=device,
    )
    buckets = {
        "weights": frozen_bytes + trainable * weight_bytes,
        "grads": trainable * grad_bytes,
        "adam": moment_bytes * trainable + ADAM_STEP_BYTES * tensors,
    }
    largest = _largest_trainable_numel(config, lora) * grad_bytes
    return Footprint(
        label=label,
        trainable_params=trainable,
        frozen_params=frozen,
        **buckets,
        **_activation_buckets(config, setup, batch_size, seq_len),
        **_peaks(config, setup, (batch_size, seq_len), buckets, largest, moment_bytes // 2 * trainable),
    )


def _peaks(
    config: MiniGPTConfig, setup: TrainingSetup, batch: tuple[int, int], buckets: dict, largest: int, moment: int
) -> dict[str, int]:
    """The predicted step peak without and with activation checkpointing."""
    return {
        name: step_peak(
            config,
            replace(setup, checkpointing=checkpointing),
            batch,
            held=buckets["weights"] + buckets["adam"],
            grads=buckets["grads"],
            largest_trainable_bytes=largest,
            moment_bytes=moment,
        ).total
        for name, checkpointing in (("peak", False), ("peak_checkpointed", True))
    }


def _parameters(
    config: MiniGPTConfig, lora: LoRAConfig | None, quant: tuple[str, int], precision: str, base_dtype: str
) -> tuple[int, int, int, int]:
    """Trainable and frozen parameter counts, the frozen parameters' bytes and the trainable tensor count.

    ``quant`` is the base's scheme and block size.
    """
    linears = block_linears(config)
    linear_weights = sum(o * i for o, i in linears.values())
    dense = count_parameters(config) - linear_weights  # embeddings, LM head, norms and biases
    if lora is None:
        return dense + linear_weights, 0, 0, _dense_tensor_count(config) + len(linears) * (2 if config.bias else 1)
    adapted = adapted_linears(config, lora)
    trained_biases = _trained_bias_numels(config, lora, adapted)
    per_layer = lora.r + 1 if lora.dora else lora.r  # DoRA: a magnitude per output feature
    trainable = sum(lora.r * i + per_layer * o for o, i in (linears[n] for n in adapted)) + sum(trained_biases)
    frozen = dense + linear_weights - sum(trained_biases)
    dense_bytes = BASE_DTYPE_BYTES[base_dtype] if precision == "fp32" else 2
    frozen_bytes = frozen * dense_bytes
    scheme, block = quant
    if scheme != "none":
        quantized = sum(quantized_weight_bytes(o, i, scheme, block) for o, i in linears.values())
        frozen_bytes = (frozen - linear_weights) * dense_bytes + quantized
    tensors = (3 if lora.dora else 2) * len(adapted) + len(trained_biases)
    return trainable, frozen, frozen_bytes, tensors


def _largest_trainable_numel(config: MiniGPTConfig, lora: LoRAConfig | None) -> int:
    """Values of the largest trainable tensor: the embedding or a block linear, or an adapter matrix."""
    linears = block_linears(config)
    if lora is None:
        return max(config.vocab_size * config.d_model, *(o * i for o, i in linears.values()))
    return max(lora.r * max(linears[name]) for name in adapted_linears(config, lora))


def _activation_buckets(config: MiniGPTConfig, setup: TrainingSetup, batch_size: int, seq_len: int) -> dict:
    """Saved activations with and without checkpointing, and the seeds' rule of thumb beside them."""
    batches = [(batch_size, seq_len)]
    return {
        "activations": saved_activations(config, setup, batches).total,
        "activations_checkpointed": saved_activations(config, replace(setup, checkpointing=True), batches).total,
        "rule_of_thumb_activations": RULE_OF_THUMB_BYTES_PER_VALUE
        * batch_size
        * seq_len
        * config.d_model
        * config.n_layer,
    }


def _dense_tensor_count(config: MiniGPTConfig) -> int:
    """Parameter tensors that are not block-linear weights or biases: embeddings, the LM head, the norms."""
    embeddings = 2 if config.tie_embeddings else 3
    return embeddings + norm_tensors(config) * (2 * config.n_layer + 1)


def _trained_bias_numels(config: MiniGPTConfig, lora: LoRAConfig, adapted: list[str]) -> list[int]:
    """Sizes of the bias vectors that ``lora.bias`` makes trainable.

    ``lora_only``: the biases of the adapted linears. ``all``: every bias of the model, the
    LayerNorms' included (injection trains every parameter whose name ends in ``.bias``; RMSNorm has none).
    """
    linears = block_linears(config)
    if lora.bias == "none":
        return []
    names = adapted if lora.bias == "lora_only" else list(linears)
    sizes = [linears[n][0] for n in names] if config.bias else []
    if lora.bias == "all" and config.norm == "layernorm":
        sizes += [config.d_model] * (2 * config.n_layer + 1)
    return sizes


def fits(footprint: Footprint, memory_bytes: int) -> bool:
    """Whether the predicted peak of a training step fits in ``memory_bytes`` of device memory."""
    return footprint.peak <= memory_bytes

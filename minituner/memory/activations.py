"""The exact activation model: every tensor autograd keeps for backward, counted from the architecture.

Nothing is instantiated: a symbolic mirror of ``MiniGPT.forward`` walks the same operations on
shapes only, and each operation saves what its PyTorch backward formula saves, *given which of
its inputs require a gradient*. That condition is what makes LoRA cheap: a frozen linear whose
input needs no gradient saves nothing, and before the first adapted layer nothing needs one.
Bytes are counted per distinct storage, as they occupy memory: ``q``, ``k`` and ``v`` saved by
the attention kernel are the projections' own outputs, counted once however many views save
them; parameters and buffers are weights, never activations.

What each operation keeps (CPU kernels of the pinned PyTorch; ``device="cuda"`` changes the two
things that differ there: dropout masks are one byte per value and half-precision norm
statistics are fp32):

* embedding: the token and position ids, when the table trains;
* dropout (p > 0, input needs a gradient): a mask of the input's size (CPU: in its dtype);
* LayerNorm: its input, a mean and a reciprocal std per token (any of input, weight, bias needing a gradient);
* RMSNorm (the CPU's composite): its input in fp32 (a copy for a half-precision input), one reciprocal
  rms per token and, when its weight trains, the normalised input (fp32); CUDA's fused kernel: the
  input and the reciprocal rms;
* linear: its input, when its weight trains (the weight itself is a parameter);
* a quantized linear: nothing (it re-dequantizes its codes in backward);
* LoRA: the (dropped-out, fp32) input of ``lora_A`` and the rank-r input of ``lora_B``; DoRA also
  the row norms, the factor g and g - 1, the scaled update and the base's share (tokens x out each),
  and under dropout a dense copy of a quantized or half-precision weight;
* GELU: its input; SwiGLU: the gate's pre-activation, and each factor of ``silu(gate) * up`` for the
  other's gradient;
* attention (``sdpa``, the fused kernel): q, k, v, its output and a log-sum-exp per head and
  token (fp32); with attention dropout in training the CPU falls back to the math path, which
  keeps fp32 copies of q, k, v and three (T x T) maps per head; ``eager`` attention keeps q, k,
  v (k and v repeated per query head under grouped-query attention), the softmax map and its
  dropout mask;
* the loss: the log-softmax (fp32, tokens x vocabulary), the targets and one scalar.

With activation checkpointing each block keeps only its input; its inside is recomputed in
backward (``peak`` accounts for one block's worth at a time).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from minituner.lora.inject import LoRAConfig
from minituner.memory.shapes import adapted_linears, block_linears
from minituner.model.minigpt import MiniGPTConfig

ATTENTION_KERNELS = ("sdpa", "eager")
DEVICES = ("cpu", "cuda")
INDEX_BYTES = 8  # int64 token ids and targets


@dataclass(frozen=True)
class TrainingSetup:
    """What decides the saved activations besides the model's shape and the batch.

    Attributes:
        lora: The adapters; None is full fine-tuning (every parameter trains).
        quantized: The frozen block linears are quantized (they save nothing).
        base_bytes: Bytes per value of the base's compute dtype (4 fp32, 2 for bf16/fp16).
        adapter_bytes: Bytes per value of the adapters (4: fp32 adapters on any base).
        checkpointing: Each block is recomputed in backward and keeps only its input.
        attention: ``sdpa`` (fused kernel) or ``eager`` (the softmax map is kept).
        device: ``cpu`` or ``cuda`` (mask and statistics dtypes, see the module docstring).
    """

    lora: LoRAConfig | None = None
    quantized: bool = False
    base_bytes: int = 4
    adapter_bytes: int = 4
    checkpointing: bool = False
    attention: str = "sdpa"
    device: str = "cpu"

    def problems(self) -> list[str]:
        """What is not allowed in this setup; [] when nothing."""
        found = []
        if self.attention not in ATTENTION_KERNELS:
            found.append(f"attention={self.attention!r} is not one of {list(ATTENTION_KERNELS)}")
        if self.device not in DEVICES:
            found.append(f"device={self.device!r} is not one of {list(DEVICES)}")
        if self.lora is None and (self.quantized or self.base_bytes != self.adapter_bytes):
            found.append("full fine-tuning trains the base: it cannot be quantized or of another dtype")
        return found


@dataclass
class _Value:
    """A tensor of the mirror: its storage, size and whether it needs a gradient."""

    storage: int
    numel: int
    itemsize: int
    requires_grad: bool


@dataclass
class _Tape:
    """The storages saved so far, by storage id, and the part of the model that saved each."""

    saved: dict[int, tuple[str, int]] = field(default_factory=dict)
    part: str = "embedding"
    _ids: itertools.count = field(default_factory=itertools.count)

    def new(self, numel: int, itemsize: int, requires_grad: bool) -> _Value:
        return _Value(next(self._ids), numel, itemsize, requires_grad)

    def save(self, value: _Value) -> None:
        self.saved.setdefault(value.storage, (self.part, value.numel * value.itemsize))

    def save_new(self, numel: int, itemsize: int) -> None:
        self.save(self.new(numel, itemsize, False))

    def by_part(self) -> dict[str, int]:
        parts: dict[str, int] = {}
        for part, n_bytes in self.saved.values():
            parts[part] = parts.get(part, 0) + n_bytes
        return parts


class _Mirror:
    """``MiniGPT.forward`` on shapes: which values exist, which need gradients, what is saved."""

    def __init__(self, config: MiniGPTConfig, setup: TrainingSetup, tape: _Tape, tokens: int, batch: int):
        self.config, self.setup, self.tape = config, setup, tape
        self.tokens, self.batch = tokens, batch
        self.full = setup.lora is None
        lora = setup.lora
        self.adapted = set() if self.full else set(adapted_linears(config, lora))
        self.linears = block_linears(config)
        self.lora_bias = "none" if self.full else lora.bias

    # which parameters train (full fine-tuning: all; LoRA: the adapters and the biases lora.bias names)
    def linear_bias_trains(self, name: str) -> bool:
        if not self.config.bias:
            return False
        return self.full or self.lora_bias == "all" or (self.lora_bias == "lora_only" and name in self.adapted)

    def block_trains(self, index: int) -> bool:
        """Whether any parameter of block ``index`` trains."""
        prefix = f"blocks.{index}."
        return self.full or self.lora_bias == "all" or any(name.startswith(prefix) for name in self.adapted)

    def norm_trains(self) -> tuple[bool, bool]:
        """(weight, bias) of a LayerNorm train."""
        return self.full, self.full or self.lora_bias == "all"

    # operations
    def activation(self, width: int, requires_grad: bool, itemsize: int | None = None) -> _Value:
        return self.tape.new(self.tokens * width, itemsize or self.setup.base_bytes, requires_grad)

    def dropout(self, x: _Value, p: float) -> _Value:
        if p == 0:
            return x  # nn.Dropout(0) returns its input
        if x.requires_grad:
            self.tape.save_new(x.numel, 1 if self.setup.device == "cuda" else x.itemsize)
        return self.tape.new(x.numel, x.itemsize, x.requires_grad)

    def norm(self, x: _Value) -> _Value:
        if self.config.norm == "rmsnorm":
            return self.rms_norm(x)
        weight, bias = self.norm_trains()
        if x.requires_grad or weight or bias:
            self.tape.save(x)
            stat_bytes = 4 if self.setup.device == "cuda" else x.itemsize
            self.tape.save_new(self.tokens, stat_bytes)  # mean
            self.tape.save_new(self.tokens, stat_bytes)  # reciprocal std
        return self.tape.new(x.numel, x.itemsize, x.requires_grad or weight or bias)

    def rms_norm(self, x: _Value) -> _Value:
        """RMSNorm: the CPU's composite saves the fp32 input, 1/rms per token and, for the weight, the normalised x."""
        weight = self.full
        if x.requires_grad:
            if self.setup.device == "cuda":  # the fused kernel: its input and the reciprocal rms
                self.tape.save(x)
            else:
                self.tape.save(x if x.itemsize == 4 else self.tape.new(x.numel, 4, True))  # upcast to fp32
            self.tape.save_new(self.tokens, 4)
            if weight and self.setup.device == "cpu":
                self.tape.save_new(x.numel, 4)
        return self.tape.new(x.numel, x.itemsize, x.requires_grad or weight)

    def linear(self, x: _Value, name: str, out_features: int) -> _Value:
        if name in self.adapted:
            return self.lora_linear(x, name, out_features)
        return self.frozen_or_full_linear(x, name, out_features)

    def frozen_or_full_linear(self, x: _Value, name: str, out_features: int) -> _Value:
        if self.full:  # the weight's gradient needs the input; a frozen (or quantized) weight saves nothing
            self.tape.save(x)
        return self.activation(out_features, x.requires_grad or self.full or self.linear_bias_trains(name))

    def lora_linear(self, x: _Value, name: str, out_features: int) -> _Value:
        y = self.frozen_or_full_linear(x, name, out_features)  # the base layer: saves nothing when frozen
        adapter_bytes = self.setup.adapter_bytes
        if x.itemsize != adapter_bytes:  # x.to(the adapter's dtype): a copy
            x = self.tape.new(x.numel, adapter_bytes, x.requires_grad)
        dropped = self.dropout(x, self.setup.lora.dropout)
        self.tape.save(dropped)  # lora_A's input, for A's gradient
        a_out = self.activation(self.setup.lora.r, True, adapter_bytes)
        self.tape.save(a_out)  # lora_B's input, for B's gradient
        if self.setup.lora.dora:
            self.dora(dropped, y, *self.linears[name])
        return self.activation(out_features, True)

    def dora(self, dropped: _Value, y: _Value, out_features: int, in_features: int) -> None:
        """DoRA's ``(g - 1) * base + g * update``, g = m / ||W + delta||: what its products and division keep."""
        width = self.setup.adapter_bytes
        self.tape.save_new(out_features, width)  # the row norms (m / norm keeps the divisor)
        self.tape.save_new(self.tokens * out_features, width)  # the scaled update (for g's gradient)
        self.tape.save_new(out_features, width)  # g (for the update's gradient)
        if self.setup.lora.dropout > 0:  # the base's share recomputed on the dropped input
            base_needs_grad = dropped.requires_grad
            if base_needs_grad and (self.setup.quantized or self.setup.base_bytes != width):
                self.tape.save_new(out_features * in_features, width)  # the weight copy that product keeps
        else:
            base_needs_grad = y.requires_grad
        self.tape.save_new(self.tokens * out_features, width)  # the base's share (for g's gradient)
        if base_needs_grad:
            self.tape.save_new(out_features, width)  # g - 1 (for the base share's gradient)

    def attention(self, q: _Value, k: _Value, v: _Value) -> _Value:
        config, setup = self.config, self.setup
        if not (q.requires_grad or k.requires_grad or v.requires_grad):
            return self.activation(config.d_model, False)
        if setup.attention == "sdpa" and not (config.dropout > 0 and setup.device == "cpu"):
            for value in (q, k, v):
                self.tape.save(value)
            out = self.activation(config.d_model, True)
            self.tape.save(out)  # the kernel's output, also o_proj's input (same storage)
            self.tape.save_new(self.tokens * config.n_head, 4)  # log-sum-exp per (batch, query head, token)
            return out
        return self.unfused_attention(q, k, v)

    def unfused_attention(self, q: _Value, k: _Value, v: _Value) -> _Value:
        """softmax(q k^T) v in separate operations: ``eager``, or the CPU's math path (fp32 copies) under dropout."""
        config, setup = self.config, self.setup
        math_path = setup.attention == "sdpa"
        if math_path:  # q and k scaled, v made contiguous (all heads): fp32 copies the products save
            q, k, v = (self.tape.new(self.tokens * config.d_model, 4, x.requires_grad) for x in (q, k, v))
        elif config.kv_heads != config.n_head:  # eager grouped-query attention repeats k and v per query head
            k, v = (self.tape.new(self.tokens * config.d_model, x.itemsize, x.requires_grad) for x in (k, v))
        map_bytes = 4 if math_path else setup.base_bytes
        maps = self.batch * config.n_head * (self.tokens // self.batch) ** 2  # (B, H, T, T)
        if k.requires_grad:
            self.tape.save(q)  # q k^T: q for k's gradient
        if q.requires_grad:
            self.tape.save(k)  # and k for q's
        weights_need_grad = q.requires_grad or k.requires_grad
        if weights_need_grad:
            self.tape.save_new(maps, map_bytes)  # the softmax output
            self.tape.save(v)  # weights @ v: v for the weights' gradient
        if config.dropout > 0:
            if weights_need_grad:
                self.tape.save_new(maps, 1 if setup.device == "cuda" else map_bytes)  # the mask
            if v.requires_grad:
                self.tape.save_new(maps, map_bytes)  # the dropped-out weights, for v's gradient
        elif v.requires_grad and not weights_need_grad:
            self.tape.save_new(maps, map_bytes)  # the softmax output, for v's gradient only
        return self.activation(config.d_model, True)  # heads merged: a contiguous copy

    def block(self, x: _Value, index: int) -> _Value:
        config = self.config
        prefix, kv_width = f"blocks.{index}", config.kv_heads * config.head_dim
        h = self.norm(x)
        q = self.linear(h, f"{prefix}.attn.q_proj", config.d_model)
        k = self.linear(h, f"{prefix}.attn.k_proj", kv_width)
        v = self.linear(h, f"{prefix}.attn.v_proj", kv_width)
        y = self.attention(q, k, v)
        y = self.dropout(self.linear(y, f"{prefix}.attn.o_proj", config.d_model), config.dropout)
        x = self.activation(config.d_model, x.requires_grad or y.requires_grad)  # x + attn
        h = self.norm(x)
        y = self.swiglu(h, prefix) if config.mlp == "swiglu" else self.gelu_mlp(h, prefix)
        y = self.dropout(y, config.dropout)
        return self.activation(config.d_model, x.requires_grad or y.requires_grad)  # x + mlp

    def gelu_mlp(self, h: _Value, prefix: str) -> _Value:
        hidden = self.linear(h, f"{prefix}.mlp.fc_in", self.config.d_ff)
        if hidden.requires_grad:
            self.tape.save(hidden)  # GELU's input
        hidden = self.activation(self.config.d_ff, hidden.requires_grad)
        return self.linear(hidden, f"{prefix}.mlp.fc_out", self.config.d_model)

    def swiglu(self, h: _Value, prefix: str) -> _Value:
        gate = self.linear(h, f"{prefix}.mlp.gate_proj", self.config.d_ff)
        if gate.requires_grad:
            self.tape.save(gate)  # SiLU's input
        gate = self.activation(self.config.d_ff, gate.requires_grad)
        up = self.linear(h, f"{prefix}.mlp.up_proj", self.config.d_ff)
        if gate.requires_grad:
            self.tape.save(up)  # silu(gate) * up: each factor for the other's gradient
        if up.requires_grad:
            self.tape.save(gate)
        hidden = self.activation(self.config.d_ff, gate.requires_grad or up.requires_grad)
        return self.linear(hidden, f"{prefix}.mlp.down_proj", self.config.d_model)

    def forward(self) -> None:
        config, tape = self.config, self.tape
        tape.part = "embedding"
        if self.full:  # the embedding tables train: their backward needs the ids
            tape.save_new(self.tokens, INDEX_BYTES)
            tape.save_new(self.tokens // self.batch, INDEX_BYTES)
        x = self.dropout(self.activation(config.d_model, self.full), config.dropout)
        for index in range(config.n_layer):
            tape.part = f"blocks.{index}"
            if not self.setup.checkpointing:
                x = self.block(x, index)
            elif x.requires_grad or self.block_trains(index):
                tape.save(x)  # the checkpoint keeps the block's input and recomputes the rest
                x = self.activation(config.d_model, True)
        tape.part = "head and loss"
        h = self.norm(x)
        if self.full:  # the tied LM head trains
            tape.save(h)
        tape.save_new(self.tokens * config.vocab_size, 4)  # log-softmax, fp32
        tape.save_new(self.tokens, INDEX_BYTES)  # targets
        tape.save_new(1, 4)  # the loss's total weight


@dataclass(frozen=True)
class ActivationCount:
    """Saved activations of one training step, in bytes, in total and by part of the model."""

    total: int
    by_part: dict[str, int]


def saved_activations(config: MiniGPTConfig, setup: TrainingSetup, batches: list[tuple[int, int]]) -> ActivationCount:
    """Bytes autograd holds between the forward and backward passes of one training step.

    Args:
        config: Model shape.
        setup: Regime, dtypes, kernel and checkpointing.
        batches: ``(batch_size, seq_len)`` of each forward pass the step takes before its backward
            (two with self-replay: the training batch and the replayed one).
    """
    problems = setup.problems()
    if problems:
        raise ValueError("; ".join(problems))
    tape = _Tape()
    for batch, seq in batches:
        _Mirror(config, setup, tape, batch * seq, batch).forward()
    return ActivationCount(total=sum(n for _, n in tape.saved.values()), by_part=tape.by_part())

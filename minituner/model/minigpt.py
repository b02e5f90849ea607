"""MiniGPT: a small decoder-only transformer, in one readable file.

Design choices, stated once so that parameter counts and LoRA targeting are unambiguous:

* **Tied embedding and LM head.** ``lm_head.weight`` *is* ``tok_emb.weight`` (one tensor), so
  the vocabulary matrix is counted once and stored once.
* **Linears carry biases** when ``MiniGPTConfig.bias`` is true (the default): the four attention
  projections and the two MLP linears each have a bias vector. The LM head never has one.
* **Unfused attention projections** ``q_proj/k_proj/v_proj/o_proj`` and MLP linears
  ``fc_in/fc_out``, so LoRA targets are plain module names.
* Pre-LayerNorm blocks, learned absolute position embeddings, GELU MLP, causal attention
  through ``scaled_dot_product_attention``.
* **LLaMA-shaped blocks on request**: ``mlp="swiglu"`` (``gate_proj``/``up_proj``/``down_proj``,
  ``down(silu(gate(x)) * up(x))``), ``norm="rmsnorm"``, grouped-query attention with ``n_kv_head``
  key/value heads, and ``tie_embeddings=False`` (a separate LM head). Positions stay learned (LLaMA
  rotates q and k instead, with no parameters).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
"""Target value that the loss skips (padding)."""

MLP_KINDS = ("gelu", "swiglu")
NORM_KINDS = ("layernorm", "rmsnorm")
LLAMA_OPTIONS = {"mlp": "gelu", "norm": "layernorm", "n_kv_head": None, "tie_embeddings": True}
RMS_NORM_EPS = 1e-5  # LLaMA 2 and 3


@dataclass(frozen=True)
class MiniGPTConfig:
    """Shape of a MiniGPT.

    Attributes:
        vocab_size: Number of token ids (256 bytes plus the tokenizer's special tokens).
        block_size: Context length in tokens.
        n_layer: Number of transformer blocks.
        n_head: Attention heads per block; must divide ``d_model``.
        d_model: Residual stream width.
        d_ff: Hidden width of the MLP.
        dropout: Dropout on embeddings, attention and residual branches.
        bias: Whether the attention and MLP linears carry bias vectors.
        mlp: ``gelu`` (``fc_in``/``fc_out``) or ``swiglu`` (``gate_proj``/``up_proj``/``down_proj``).
        norm: ``layernorm`` or ``rmsnorm`` (no bias, as LLaMA's).
        n_kv_head: Key/value heads (grouped-query attention); None: ``n_head``. Must divide ``n_head``.
        tie_embeddings: The LM head is the token embedding (one tensor); false: a separate head.
    """

    vocab_size: int = 259
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    d_ff: int = 256
    dropout: float = 0.0
    bias: bool = True
    mlp: str = "gelu"
    norm: str = "layernorm"
    n_kv_head: int | None = None
    tie_embeddings: bool = True

    def to_dict(self) -> dict:
        """Plain-dict form, as stored in a base checkpoint's ``config.json`` and hashed into its cache key.

        The LLaMA-shaped options appear only when they differ from their defaults, so a GPT-shaped
        model's dict (and every base key made from it) does not depend on them.
        """
        fields = asdict(self)
        for key, default in LLAMA_OPTIONS.items():
            if fields[key] == default:
                del fields[key]
        return fields

    @property
    def kv_heads(self) -> int:
        """Key/value heads: ``n_kv_head``, or ``n_head`` without grouped-query attention."""
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_head

    @classmethod
    def problems(cls, fields: object, prefix: str = "") -> list[str]:
        """What keeps ``fields`` (a dict of this class's fields) from making a valid MiniGPT; [] when nothing.

        Args:
            fields: Field values, e.g. a base's stored ``model`` dict or the ``model`` config node.
            prefix: Put before each key in the messages (``model.``).
        """
        if not isinstance(fields, dict):
            return [
                f"{prefix or 'model config'} must be a mapping of {list(cls.__dataclass_fields__)}, "
                f"found {type(fields).__name__}"
            ]
        problems = [
            f"{prefix}{key} is not a MiniGPT field (allowed: {list(cls.__dataclass_fields__)})"
            for key in fields
            if key not in cls.__dataclass_fields__
        ]
        for key in ("vocab_size", "block_size", "n_layer", "n_head", "d_model", "d_ff"):
            value = fields.get(key, getattr(cls, key))
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"{prefix}{key}={value!r} is not allowed: must be a positive integer")
        if not problems and fields.get("vocab_size", cls.vocab_size) < cls.vocab_size:
            problems.append(
                f"{prefix}vocab_size={fields['vocab_size']} is not allowed: the byte tokenizer needs "
                f"at least {cls.vocab_size} ids"
            )
        n_head, d_model = fields.get("n_head", cls.n_head), fields.get("d_model", cls.d_model)
        if not problems and d_model % n_head != 0:
            divisors = [h for h in range(1, d_model + 1) if d_model % h == 0]
            problems.append(
                f"{prefix}n_head={n_head} does not divide {prefix}d_model={d_model}: "
                f"allowed n_head values are {divisors}"
            )
        problems += cls._llama_problems(fields, prefix)
        dropout = fields.get("dropout", cls.dropout)
        if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            problems.append(f"{prefix}dropout={dropout!r} is not allowed: must be in [0, 1)")
        for key in ("bias", "tie_embeddings"):
            if not isinstance(fields.get(key, getattr(cls, key)), bool):
                problems.append(f"{prefix}{key}={fields[key]!r} is not allowed: must be true or false")
        return problems

    @classmethod
    def _llama_problems(cls, fields: dict, prefix: str) -> list[str]:
        problems = [
            f"{prefix}{key}={fields[key]!r} is not allowed: must be one of {list(choices)}"
            for key, choices in (("mlp", MLP_KINDS), ("norm", NORM_KINDS))
            if fields.get(key, getattr(cls, key)) not in choices
        ]
        kv_heads, n_head = fields.get("n_kv_head"), fields.get("n_head", cls.n_head)
        if kv_heads is not None and (
            not isinstance(kv_heads, int) or isinstance(kv_heads, bool) or kv_heads <= 0 or n_head % kv_heads
        ):
            divisors = [h for h in range(1, n_head + 1) if isinstance(n_head, int) and n_head % h == 0]
            problems.append(
                f"{prefix}n_kv_head={kv_heads!r} is not allowed: must divide {prefix}n_head={n_head} "
                f"({divisors}) or be null"
            )
        return problems


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q/k/v/o projections (k and v: ``kv_heads`` heads)."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        d, bias, kv_width = config.d_model, config.bias, config.kv_heads * config.head_dim
        self.n_head, self.kv_heads = config.n_head, config.kv_heads
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, kv_width, bias=bias)
        self.v_proj = nn.Linear(d, kv_width, bias=bias)
        self.o_proj = nn.Linear(d, d, bias=bias)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        head_dim = d_model // self.n_head

        def split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
            # (B, T, heads * Dh) -> (B, heads, T, Dh)
            return t.view(batch, seq, heads, head_dim).transpose(1, 2)

        q = split_heads(self.q_proj(x), self.n_head)
        k, v = split_heads(self.k_proj(x), self.kv_heads), split_heads(self.v_proj(x), self.kv_heads)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            is_causal=True,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.kv_heads != self.n_head,  # each key/value head serves n_head / kv_heads query heads
        )
        # (B, H, T, D/H) -> (B, T, D)
        y = y.transpose(1, 2).contiguous().view(batch, seq, d_model)
        return self.resid_drop(self.o_proj(y))


class MLP(nn.Module):
    """Two-layer GELU feed-forward network."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        self.fc_in = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.fc_out = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc_out(F.gelu(self.fc_in(x))))


class SwiGLU(nn.Module):
    """LLaMA's gated feed-forward network: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.up_proj = nn.Linear(config.d_model, config.d_ff, bias=config.bias)
        self.down_proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


def make_norm(config: MiniGPTConfig) -> nn.Module:
    """The block's normalisation: LayerNorm (weight and bias) or RMSNorm (weight only)."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.d_model, eps=RMS_NORM_EPS)
    return nn.LayerNorm(config.d_model)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class MiniGPT(nn.Module):
    """Decoder-only transformer language model with a tied embedding / LM head."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        problems = MiniGPTConfig.problems(config.to_dict(), prefix="model.")
        if problems:
            raise ValueError("; ".join(problems))
        self.config = config
        # Recompute each block in backward instead of keeping what it saves (a training-time choice,
        # not part of the shape: set by the run, never stored with a base).
        self.activation_checkpointing = False
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight  # tied: one tensor, counted and stored once
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "fc_out.weight", "down_proj.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the model.

        Args:
            idx: Token ids, shape (B, T) with T <= block_size.
            targets: Optional next-token ids, shape (B, T); ``IGNORE_INDEX`` marks padding.

        Returns:
            ``(logits, loss)``: logits of shape (B, T, vocab_size) and the mean cross-entropy
            over non-ignored targets, or ``None`` when no targets are given.
        """
        _, seq = idx.shape
        if seq > self.config.block_size:
            raise ValueError(f"sequence length {seq} exceeds model.block_size={self.config.block_size}")
        positions = torch.arange(seq, device=idx.device)
        x = self.drop(self.tok_emb(idx) + self.pos_emb(positions))  # (B, T, D)
        checkpointed = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            # non-reentrant: works with frozen inputs (LoRA) and replays the RNG, so dropout masks repeat
            x = checkpoint(block, x, use_reentrant=False) if checkpointed else block(x)
        # fp32 logits whatever the base's dtype (base.dtype): the loss and the metrics' softmax need the range
        logits = self.lm_head(self.ln_f(x)).float()  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=IGNORE_INDEX)
        return logits, loss

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of distinct parameters (the tied embedding/LM head counted once)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)


def count_parameters(config: MiniGPTConfig) -> int:
    """Parameter count of a MiniGPT computed from its shape alone (no model built).

    Per block: q/o projections (d*d [+ d]), k/v projections (d*kv [+ kv], kv = kv_heads * head_dim),
    the MLP (GELU: d*ff [+ ff] + ff*d [+ d]; SwiGLU: two d*ff [+ ff] and one ff*d [+ d]) and two norms
    (LayerNorm 2*d, RMSNorm d). Plus token and position embeddings, the final norm and, untied, the LM head.
    """
    d, ff, b = config.d_model, config.d_ff, int(config.bias)
    kv = config.kv_heads * config.head_dim
    attention = 2 * (d * d + b * d) + 2 * (d * kv + b * kv)
    mlp = (d * ff + b * ff) + (ff * d + b * d)
    if config.mlp == "swiglu":
        mlp += d * ff + b * ff
    norm = 2 * d if config.norm == "layernorm" else d
    per_block = attention + mlp + 2 * norm
    embeddings = config.vocab_size * d * (1 if config.tie_embeddings else 2) + config.block_size * d
    return config.n_layer * per_block + embeddings + norm

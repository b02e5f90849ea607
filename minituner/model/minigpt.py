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
    """

    vocab_size: int = 259
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 64
    d_ff: int = 256
    dropout: float = 0.0
    bias: bool = True

    def to_dict(self) -> dict:
        """Plain-dict form, as stored in a base checkpoint's ``config.json``."""
        return asdict(self)

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
        dropout = fields.get("dropout", cls.dropout)
        if not isinstance(dropout, int | float) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            problems.append(f"{prefix}dropout={dropout!r} is not allowed: must be in [0, 1)")
        if not isinstance(fields.get("bias", cls.bias), bool):
            problems.append(f"{prefix}bias={fields['bias']!r} is not allowed: must be true or false")
        return problems


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with separate q/k/v/o projections."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        d, bias = config.d_model, config.bias
        self.n_head = config.n_head
        self.q_proj = nn.Linear(d, d, bias=bias)
        self.k_proj = nn.Linear(d, d, bias=bias)
        self.v_proj = nn.Linear(d, d, bias=bias)
        self.o_proj = nn.Linear(d, d, bias=bias)
        self.dropout = config.dropout
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, d_model = x.shape
        head_dim = d_model // self.n_head

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            # (B, T, D) -> (B, H, T, D/H)
            return t.view(batch, seq, self.n_head, head_dim).transpose(1, 2)

        q, k, v = split_heads(self.q_proj(x)), split_heads(self.k_proj(x)), split_heads(self.v_proj(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
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


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class MiniGPT(nn.Module):
    """Decoder-only transformer language model with a tied embedding / LM head."""

    def __init__(self, config: MiniGPTConfig):
        super().__init__()
        if config.d_model % config.n_head != 0:
            raise ValueError(f"model.n_head={config.n_head} must divide model.d_model={config.d_model}")
        self.config = config
        # Recompute each block in backward instead of keeping what it saves (a training-time choice,
        # not part of the shape: set by the run, never stored with a base).
        self.activation_checkpointing = False
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one tensor, counted and stored once
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, param in self.named_parameters():
            if name.endswith(("o_proj.weight", "fc_out.weight")):
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

    Per block: 4 attention linears (d*d [+ d]), fc_in (d*ff [+ ff]), fc_out (ff*d [+ d]) and two
    LayerNorms (2*d each). Plus token and position embeddings and the final LayerNorm; the LM
    head is tied to the token embedding and adds nothing.
    """
    d, ff, b = config.d_model, config.d_ff, int(config.bias)
    attention = 4 * (d * d + b * d)
    mlp = (d * ff + b * ff) + (ff * d + b * d)
    layer_norms = 2 * (2 * d)
    per_block = attention + mlp + layer_norms
    embeddings = config.vocab_size * d + config.block_size * d
    return config.n_layer * per_block + embeddings + 2 * d

"""MiniGPT's inference path with a key/value cache: each new token costs one position, not all.

``MiniGPT.forward`` recomputes every position of the sequence; generating T tokens that way
costs O(T^2) positions. Here each block's attention keys and values of the tokens seen so far are
kept, so a step runs only the new tokens through the network. The layers are called as modules
(``attn.q_proj(h)``...), so LoRA-wrapped and quantized projections work unchanged. Training never
comes here. Eval mode only: dropout is not applied.

Shapes: B sequences, H heads, D = d_model, Dh = D / H, T tokens cached so far, t new tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from minituner.model.minigpt import MiniGPT


@dataclass
class KVCache:
    """Keys and values per block, each (B, kv heads, T, Dh); ``length`` = T."""

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    length: int = 0

    @classmethod
    def empty(cls, n_layer: int) -> KVCache:
        """A cache with nothing in it yet."""
        return cls([None] * n_layer, [None] * n_layer, 0)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the sequences ``rows`` (e.g. the unfinished ones), in that order."""
        self.keys = [k[rows] for k in self.keys]
        self.values = [v[rows] for v in self.values]


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, t, heads * Dh) -> (B, heads, t, Dh)."""
    batch, new, width = t.shape
    return t.view(batch, new, heads, width // heads).transpose(1, 2)


@torch.no_grad()
def next_token_logits(model: MiniGPT, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Run the new tokens ``idx`` (B, t) after the ``cache.length`` cached ones; extend the cache.

    Returns:
        (B, vocab_size) logits of the token after the last one given; equal (up to float
        summation order) to ``model(full_sequence)[0][:, -1]``.
    """
    batch, new = idx.shape
    start = cache.length
    if start + new > model.config.block_size:
        raise ValueError(f"sequence length {start + new} exceeds model.block_size={model.config.block_size}")
    positions = torch.arange(start, start + new, device=idx.device)
    x = model.tok_emb(idx) + model.pos_emb(positions)  # (B, t, D)
    for layer, block in enumerate(model.blocks):
        attn = block.attn
        h = block.ln_1(x)
        q = _split_heads(attn.q_proj(h), attn.n_head)
        k, v = (_split_heads(p(h), attn.kv_heads) for p in (attn.k_proj, attn.v_proj))
        if cache.keys[layer] is not None:
            k = torch.cat([cache.keys[layer], k], dim=2)  # (B, H, T + t, Dh)
            v = torch.cat([cache.values[layer], v], dim=2)
        cache.keys[layer], cache.values[layer] = k, v
        # the new tokens see every cached one and, among themselves, only earlier ones
        mask = torch.ones(new, start + new, dtype=torch.bool, device=idx.device).tril(diagonal=start)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=attn.kv_heads != attn.n_head)
        x = x + attn.o_proj(y.transpose(1, 2).reshape(batch, new, -1))
        x = x + block.mlp(block.ln_2(x))
    cache.length = start + new
    return model.lm_head(model.ln_f(x[:, -1])).float()  # (B, V), fp32 as MiniGPT.forward's

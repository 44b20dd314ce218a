"""Pre-LayerNorm Transformers: an encoder classifier and a decoder-only causal language model.

Token inputs use id 0 as padding: padding keys are masked out of attention, out of the
classifier's mean pool, and (labels -1, see dlx.train.step) out of the LM loss. Positions are
learned (an absolute table of ``max_len`` rows) or rotary (RoPE on queries and keys).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from dlx.models.attention import SelfAttention, attention_mask

POSITIONS = ("learned", "rotary")
EMBED_INIT = nn.initializers.normal(0.02)  # GPT-2's; the residual stream starts small


class Block(nn.Module):
    """x + attn(LN(x)), then x + mlp(LN(x)): pre-LN keeps deep stacks stable without warm-up
    tricks, since the residual stream is never normalised away."""

    heads: int
    mlp_ratio: int = 4
    dropout: float = 0.0
    rotary: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        d = x.shape[-1]
        drop = nn.Dropout(self.dropout, deterministic=not train)
        x = x + drop(SelfAttention(self.heads, self.rotary)(nn.LayerNorm()(x), mask, train))
        h = nn.gelu(nn.Dense(self.mlp_ratio * d)(nn.LayerNorm()(x)))
        return x + drop(nn.Dense(d)(h))


class Encoder(nn.Module):
    """Positions + dropout + ``layers`` blocks + a final LayerNorm over (B, T, d_model) inputs."""

    layers: int
    heads: int
    mlp_ratio: int
    dropout: float
    positions: str
    max_len: int

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, valid: jnp.ndarray, causal: bool, train: bool = False
    ) -> jnp.ndarray:
        if self.positions not in POSITIONS:
            raise ValueError(f"model.positions must be one of {POSITIONS}, got {self.positions!r}")
        t, d = x.shape[-2:]
        if self.positions == "learned":
            if t > self.max_len:
                raise ValueError(f"sequence length {t} exceeds model.max_len={self.max_len}")
            table = self.param("pos_embed", EMBED_INIT, (self.max_len, d))
            x = x + table[:t]
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
        mask = attention_mask(valid, causal)
        rotary = self.positions == "rotary"
        for _ in range(self.layers):
            x = Block(self.heads, self.mlp_ratio, self.dropout, rotary)(x, mask, train)
        return nn.LayerNorm()(x)


class TransformerClassifier(nn.Module):
    """Encoder over float sequences (B, T, F) (linear projection of patches of ``patch`` steps)
    or token ids (B, T) (when ``vocab_size > 0``); pooled by a mean over real positions or a
    CLS token."""

    num_classes: int
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    positions: str = "learned"  # learned | rotary
    max_len: int = 512
    pool: str = "mean"  # mean | cls
    vocab_size: int = 0  # > 0: inputs are token ids (0 = padding) embedded to d_model
    patch: int = 1  # float inputs: this many consecutive steps make one token (as ViT)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"model.pool must be mean or cls, got {self.pool!r}")
        if self.vocab_size > 0:
            tokens = x.astype(jnp.int32)
            valid = tokens != 0
            h = nn.Embed(self.vocab_size, self.d_model, embedding_init=EMBED_INIT)(tokens)
        else:
            b, t, f = x.shape
            if t % self.patch:
                raise ValueError(f"sequence length {t} is not a multiple of model.patch")
            # One scalar per token gives attention little to compare; a patch of steps
            # embedded together is a token with local shape in it.
            x = x.reshape(b, t // self.patch, self.patch * f)
            valid = jnp.ones(x.shape[:2], bool)  # fixed-length float sequences: nothing padded
            h = nn.Dense(self.d_model)(x)
        if self.pool == "cls":
            cls = self.param("cls", EMBED_INIT, (1, 1, self.d_model))
            h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.d_model)), h], 1)
            valid = jnp.concatenate([jnp.ones((h.shape[0], 1), bool), valid], 1)
        h = Encoder(
            self.layers, self.heads, self.mlp_ratio, self.dropout, self.positions, self.max_len
        )(h, valid, causal=False, train=train)
        if self.pool == "cls":
            pooled = h[:, 0]
        else:
            w = valid[..., None].astype(h.dtype)
            pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
        return nn.Dense(self.num_classes)(pooled)


class TransformerLM(nn.Module):
    """Decoder-only causal LM over token ids (B, T) -> next-token logits (B, T, V).

    ``num_classes`` is the vocabulary size (the runner passes the dataset's).
    """

    num_classes: int
    d_model: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.1
    positions: str = "learned"  # learned | rotary
    max_len: int = 1024

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        tokens = x.astype(jnp.int32)
        h = nn.Embed(self.num_classes, self.d_model, embedding_init=EMBED_INIT)(tokens)
        h = Encoder(
            self.layers, self.heads, self.mlp_ratio, self.dropout, self.positions, self.max_len
        )(h, tokens != 0, causal=True, train=train)
        return nn.Dense(self.num_classes, name="head")(h)

"""Pre-LayerNorm Transformers: an encoder classifier and a decoder-only causal language model.

Token inputs use id 0 as padding: padding keys are masked out of attention, out of the
classifier's mean pool, and (labels -1, see dlx.training.step) out of the LM loss. Positions are
learned (an absolute table of ``max_len`` rows) or rotary (RoPE on queries and keys).

Variable-length sequences: ``__call__(x, lengths=...)`` with ``lengths`` (B,) the real steps of
each right-padded row. Steps beyond a length are zeroed (token id 0, i.e. padding, for token
inputs) before anything reads them, so the padding content never matters, then they are
treated as padding: masked out of attention as keys (combined with the token mask and, in
the LM, the causal mask) and out of the mean pool. Right padding shifts no real position, so
learned and rotary positions are unaffected. The output for each row is then that of the
sequence alone, unpadded.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlx.models.attention import SelfAttention, attention_mask
from dlx.models.pooling import length_mask, mask_steps, masked_mean

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
    CLS token.

    With ``lengths`` and ``patch > 1``, a patch is real if it holds any real step (patch p is
    real iff ``p * patch < length``); the steps of a partial last patch beyond the length are
    zeroed, so that patch embeds as if the sequence were zero-padded to a whole patch. A
    sequence whose length is a multiple of ``patch`` gets exactly its unpadded output.
    """

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
    def __call__(
        self, x: jnp.ndarray, train: bool = False, lengths: jax.Array | None = None
    ) -> jnp.ndarray:
        """x (B, T, F) floats or (B, T) token ids -> logits (B, num_classes); ``lengths`` (B,)
        the real steps per row (the rest is padding, ignored), or None: only token id 0 is
        padding (floats: nothing is)."""
        if self.pool not in ("mean", "cls"):
            raise ValueError(f"model.pool must be mean or cls, got {self.pool!r}")
        if self.vocab_size > 0:
            tokens = x.astype(jnp.int32)
            if lengths is not None:  # beyond the length: padding id 0, whatever was there
                tokens = mask_steps(tokens, length_mask(lengths, tokens.shape[1]))
            valid = tokens != 0
            h = nn.Embed(self.vocab_size, self.d_model, embedding_init=EMBED_INIT)(tokens)
        else:
            b, t, f = x.shape
            if t % self.patch:
                raise ValueError(f"sequence length {t} is not a multiple of model.patch")
            # One scalar per token gives attention little to compare; a patch of steps
            # embedded together is a token with local shape in it.
            if lengths is not None:
                x = mask_steps(x, length_mask(lengths, t))
            x = x.reshape(b, t // self.patch, self.patch * f)
            if lengths is None:  # fixed-length float sequences: nothing padded
                valid = jnp.ones(x.shape[:2], bool)
            else:  # a patch holding any real step is real
                real_patches = -(-jnp.asarray(lengths, jnp.int32) // self.patch)
                valid = length_mask(real_patches, x.shape[1])
            h = nn.Dense(self.d_model)(x)
        if self.pool == "cls":
            cls = self.param("cls", EMBED_INIT, (1, 1, self.d_model))
            h = jnp.concatenate([jnp.broadcast_to(cls, (h.shape[0], 1, self.d_model)), h], 1)
            valid = jnp.concatenate([jnp.ones((h.shape[0], 1), bool), valid], 1)
        h = Encoder(
            self.layers, self.heads, self.mlp_ratio, self.dropout, self.positions, self.max_len
        )(h, valid, causal=False, train=train)
        pooled = h[:, 0] if self.pool == "cls" else masked_mean(h, valid)
        return nn.Dense(self.num_classes)(pooled)


class TransformerLM(nn.Module):
    """Decoder-only causal LM over token ids (B, T) -> next-token logits (B, T, V).

    ``num_classes`` is the vocabulary size (the runner passes the dataset's).

    ``lengths`` (B,) is accepted for the same call as every sequence model: tokens beyond a
    length become padding (id 0, also masked as keys). The causal mask already keeps a real
    position from seeing the right padding, so real positions' logits are those of the
    unpadded sequence with or without it; the padding positions' logits are computed but
    meaningless, and the loss ignores them through their labels (< 0).
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
    def __call__(
        self, x: jnp.ndarray, train: bool = False, lengths: jax.Array | None = None
    ) -> jnp.ndarray:
        tokens = x.astype(jnp.int32)
        if lengths is not None:
            tokens = mask_steps(tokens, length_mask(lengths, tokens.shape[1]))
        h = nn.Embed(self.num_classes, self.d_model, embedding_init=EMBED_INIT)(tokens)
        h = Encoder(
            self.layers, self.heads, self.mlp_ratio, self.dropout, self.positions, self.max_len
        )(h, tokens != 0, causal=True, train=train)
        return nn.Dense(self.num_classes, name="head")(h)

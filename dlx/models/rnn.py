"""Recurrent sequence classifiers: GRU or LSTM cells scanned over time with ``nn.RNN``.

Inputs are float sequences (B, T, F), or token ids (B, T) when ``vocab_embed > 0``. Padding
is on the right. The sequence lengths go to ``nn.RNN(seq_lengths=)``, so the state read out
is the one after each sequence's last real step, and the backward direction of a
bidirectional layer starts at that step, not in the padding. The lengths are ``lengths``
(B,) when the caller gives them (datasets of variable-length sequences), else for tokens
the number of non-zero ids (id 0 is padding), else none: every step is real.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlx.models.pooling import length_mask, mask_steps

CELLS = {"gru": nn.GRUCell, "lstm": nn.OptimizedLSTMCell}


def token_lengths(tokens: jnp.ndarray) -> jnp.ndarray:
    """Number of non-padding tokens per row (>= 1, so an all-padding row still reads a state)."""
    return jnp.maximum((tokens != 0).sum(-1), 1).astype(jnp.int32)


def _hidden(carry: object) -> jnp.ndarray:
    # An LSTM's carry is (c, h); the GRU's is h. The read-out uses h.
    return carry[1] if isinstance(carry, tuple) else carry


class RNNClassifier(nn.Module):
    """Stacked (optionally bidirectional) GRU/LSTM; the last layer's final state -> logits."""

    num_classes: int
    cell: str = "gru"  # gru | lstm
    hidden: int = 128
    layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0  # between layers and before the head
    project: int = 0  # > 0: a Dense input projection to this width before the first layer
    vocab_embed: int = 0  # > 0: inputs are token ids, embedded to this width
    vocab_size: int = 256  # number of token ids (incl. padding 0); used when vocab_embed > 0

    @nn.compact
    def __call__(
        self, x: jnp.ndarray, train: bool = False, lengths: jax.Array | None = None
    ) -> jnp.ndarray:
        """x (B, T, F) floats or (B, T) token ids -> logits (B, num_classes).

        ``lengths`` (B,): real steps per row; the steps after them are padding, whose content
        never reaches the output (it is zeroed first, so even NaN there is harmless). The
        output is then that of each sequence alone, unpadded. Lengths are clipped to
        [1, T]: a row of length 0 reads the state after one (zeroed) step.
        """
        if self.cell not in CELLS:
            raise ValueError(f"model.cell must be one of {sorted(CELLS)}, got {self.cell!r}")
        if lengths is not None:
            t = x.shape[1]
            lengths = jnp.clip(jnp.asarray(lengths, jnp.int32), 1, t)
            x = mask_steps(x, length_mask(lengths, t))
        if self.vocab_embed > 0:
            tokens = x.astype(jnp.int32)
            if lengths is None:
                lengths = token_lengths(tokens)
            x = nn.Embed(self.vocab_size, self.vocab_embed)(tokens)
        if self.project > 0:
            x = nn.Dense(self.project)(x)
        make = CELLS[self.cell]
        for i in range(self.layers):
            last = i == self.layers - 1
            if self.bidirectional:
                layer = nn.Bidirectional(
                    nn.RNN(make(features=self.hidden)), nn.RNN(make(features=self.hidden))
                )
                carry, x = layer(x, seq_lengths=lengths, return_carry=True)
                state = jnp.concatenate([_hidden(carry[0]), _hidden(carry[1])], -1)
            else:
                carry, x = nn.RNN(make(features=self.hidden))(
                    x, seq_lengths=lengths, return_carry=True
                )
                state = _hidden(carry)
            if not last:
                x = nn.Dropout(self.dropout, deterministic=not train)(x)
        state = nn.Dropout(self.dropout, deterministic=not train)(state)
        return nn.Dense(self.num_classes)(state)

"""`dlx sample`: generate text from a character-level language-model run's checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlx.errors import UserError


def _next_logits_fn(apply_fn: Any) -> Any:
    import jax

    @jax.jit
    def next_logits(params: Any, window: jax.Array, pos: jax.Array) -> jax.Array:
        # Causal attention: the logits at `pos` see only tokens 0..pos, so the zero padding
        # after it changes nothing, and one compiled shape serves every step.
        return apply_fn({"params": params}, window, train=False)[0, pos]

    return next_logits


def pick(
    logits: np.ndarray,
    temperature: float,
    top_k: int | None,
    rng: np.random.Generator,
    banned: tuple[int, ...] = (),
) -> int:
    """Sample one token id: temperature-scaled softmax over the top-k logits (0 = greedy)."""
    logits = np.asarray(logits, np.float64).copy()
    logits[list(banned)] = -np.inf
    if temperature <= 0:
        return int(np.argmax(logits))
    if top_k is not None and 0 < top_k < len(logits):
        cutoff = np.sort(logits)[-top_k]
        logits[logits < cutoff] = -np.inf
    z = logits / temperature
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def sample(
    path: str | Path,
    prompt: str,
    tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
    kind: str = "best",
) -> str:
    """The prompt followed by `tokens` generated characters."""
    import jax.numpy as jnp

    from dlx.data.text import SPECIAL, encode
    from dlx.restore import load_run

    run = load_run(path, kind=kind)
    if run.data.task != "lm" or run.data.vocab is None:
        raise UserError(
            f"{run.run_dir} is not a language-model run (task {run.data.task!r})",
            hint="dlx sample works on runs of recipe=transformer (or data=text)",
        )
    if tokens < 1:
        raise UserError(f"--tokens must be at least 1, got {tokens}")
    vocab, length = run.data.vocab, int(run.cfg.data.seq_len)
    ids = list(encode(prompt, vocab)) if prompt else [int(run.data.x_test[0, 0])]
    next_logits = _next_logits_fn(run.state.apply_fn)
    rng = np.random.default_rng(seed)
    window = np.zeros((1, length), np.int32)
    for _ in range(tokens):
        ctx = ids[-length:]
        window[:] = 0
        window[0, : len(ctx)] = ctx
        logits = np.asarray(next_logits(run.state.params, jnp.asarray(window), len(ctx) - 1))
        ids.append(pick(logits, temperature, top_k, rng, banned=tuple(range(len(SPECIAL)))))
    generated = "".join(vocab[i] for i in ids[len(ids) - tokens :])
    return prompt + generated

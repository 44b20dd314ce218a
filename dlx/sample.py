"""`dlx sample`: generate from a run's checkpoint: text from a character-level language
model, a PNG grid of images from a GAN (task=gan)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dlx.errors import UserError


def _next_logits_fn(apply_fn: Any) -> Any:
    import jax

    @jax.jit
    def next_logits(variables: Any, window: jax.Array, pos: jax.Array) -> jax.Array:
        # Causal attention: the logits at `pos` see only tokens 0..pos, so the zero padding
        # after it changes nothing, and one compiled shape serves every step.
        return apply_fn(variables, window, train=False)[0, pos]

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


def load(path: str | Path, kind: str = "best") -> Any:
    """The run to sample from. A GAN is restored without its quality classifier (sampling
    needs none, and it may have moved), from its latest checkpoint when it kept no best one
    (no quality metric: task.classifier=null)."""
    from dlx.restore import find_run_dir, load_config, load_run

    run_dir = find_run_dir(path)
    if load_config(run_dir).task.get("name") != "gan":
        return load_run(run_dir, kind=kind)
    if kind == "best" and not any((run_dir / "checkpoints" / "best").glob("[0-9]*")):
        kind = "latest"
    return load_run(run_dir, ["task.classifier=null"], kind=kind)


def is_gan(run: Any) -> bool:
    return getattr(run.task, "name", None) == "gan"


def sample_images(
    path: str | Path | Any, n: int = 64, seed: int = 0, out: Path | None = None, kind: str = "best"
) -> Path:
    """A grid of `n` generated images (noise drawn with `seed`) as a PNG: `out`, default
    <run dir>/samples.png. `path` is a run dir or a run from `load`."""
    from dlx.tasks.gan_quality import write_grid

    run = load(path, kind) if isinstance(path, (str, Path)) else path
    if not is_gan(run):
        raise UserError(
            f"{run.run_dir} is not a GAN run (task {run.task.name!r})",
            hint="image samples come from runs of recipe=gan (task=gan)",
        )
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}", hint="e.g. --n 64")
    images = run.task.sample_images(run.state.params, n, seed)
    out = Path(out) if out is not None else run.run_dir / "samples.png"
    return write_grid(images, out, f"{run.run_dir.name}: step {run.step}, seed {seed}")


def sample(
    path: str | Path | Any,
    prompt: str,
    tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = 40,
    seed: int = 0,
    kind: str = "best",
) -> str:
    """The prompt followed by `tokens` generated characters. `path` is a run dir or a run
    from `load`."""
    import jax.numpy as jnp

    from dlx.data.text import SPECIAL, encode
    from dlx.training.step import variables

    run = load(path, kind) if isinstance(path, (str, Path)) else path
    if is_gan(run):
        raise UserError(
            f"{run.run_dir} is a GAN run: it makes images, not text",
            hint=f"dlx sample {run.run_dir} --n 64 writes a PNG grid",
        )
    if run.data.task != "lm" or run.data.vocab is None:
        raise UserError(
            f"{run.run_dir} is not a language-model run (task {run.data.task!r})",
            hint="dlx sample works on runs of recipe=transformer (or data=text) and recipe=gan",
        )
    if tokens < 1:
        raise UserError(f"--tokens must be at least 1, got {tokens}", hint="e.g. --tokens 200")
    vocab, length = run.data.vocab, int(run.cfg.data.seq_len)
    ids = list(encode(prompt, vocab)) if prompt else [int(run.data.x_test[0, 0])]
    next_logits = _next_logits_fn(run.state.apply_fn)
    rng = np.random.default_rng(seed)
    window = np.zeros((1, length), np.int32)
    for _ in range(tokens):
        ctx = ids[-length:]
        window[:] = 0
        window[0, : len(ctx)] = ctx
        logits = np.asarray(next_logits(variables(run.state), jnp.asarray(window), len(ctx) - 1))
        ids.append(pick(logits, temperature, top_k, rng, banned=tuple(range(len(SPECIAL)))))
    generated = "".join(vocab[i] for i in ids[len(ids) - tokens :])
    return prompt + generated

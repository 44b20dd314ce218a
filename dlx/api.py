"""dlx from Python (notebooks, scripts): the same runs and run dirs as the CLI.

    import dlx
    run = dlx.train("digits", ["trainer.epochs=2", "optim.lr=3e-3"])
    run.summary["test"]["test/accuracy"], run.dir, run.metrics[-1]
    model = dlx.load(run.dir)              # the best checkpoint
    probs = model.predict(x)               # numpy in, numpy out (batched, jitted)

Errors are raised (`dlx.UserError` for bad input), never `sys.exit`; signal handlers are
installed only when called from the main thread (preemption then checkpoints as in the CLI).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Run:
    """A finished (or stopped) run: its directory, config and summary."""

    dir: Path
    config: Any  # the composed OmegaConf config
    summary: dict

    @property
    def status(self) -> str:
        return str(self.summary.get("status"))

    @property
    def metrics(self) -> list[dict]:
        """metrics.jsonl as records (train logs, evals, test)."""
        from dlx.track.metrics import read_metrics

        return read_metrics(self.dir / "metrics.jsonl")

    def load(self, kind: str = "best") -> Model:
        return load(self.dir, kind=kind)


def train(
    recipe: str = "cnn", overrides: Sequence[str] = (), config_dir: str | Path | None = None
) -> Run:
    """Train `recipe` with Hydra overrides (`["optim.lr=3e-4", "model=cnn_small"]`), as
    `dlx train recipe=... ...` would; `resume=<run dir>` continues a run."""
    from dlx.commands.train import train_overrides

    given = [o for o in overrides if not o.startswith("recipe=")]
    resuming = any(o.startswith("resume=") for o in given)
    where = Path(config_dir) if config_dir is not None else None
    out, summary = train_overrides(given if resuming else [f"recipe={recipe}", *given], where)
    cfg = _saved_config(out)
    return Run(Path(out) if out is not None else Path(), cfg, summary)


def _saved_config(run_dir: Path | None) -> Any:
    from omegaconf import OmegaConf

    if run_dir is None or not (Path(run_dir) / "config.yaml").is_file():
        return None  # processes other than 0 write no run dir
    return OmegaConf.load(Path(run_dir) / "config.yaml")


class Model:
    """A trained model from a run dir: `.predict(x)`, `.params`, `.config`."""

    def __init__(self, loaded: Any) -> None:
        self._run = loaded
        self.params = loaded.state.params
        self.config = loaded.cfg
        self.task = loaded.task
        self.data = loaded.data  # the run's dataset, as its loader prepared it (normalised)
        self.step = loaded.step
        self._fn: Any = None

    def __repr__(self) -> str:
        return f"Model({self._run.run_dir}, step {self.step}, task {self.task.name})"

    def outputs(self, x: np.ndarray, batch_size: int = 1000, **extra: np.ndarray) -> np.ndarray:
        """`x` as the run's data loader prepares it (e.g. `model.data.x_test`: normalised
        like the training data); extra inputs by keyword (`lengths=` for padded sequences).
        The model's raw outputs (logits for classifiers and LMs, predictions for
        regression), in order, computed in fixed-size jitted batches."""
        import jax

        from dlx.data import eval_batches
        from dlx.tasks.supervised import apply_model

        x = np.asarray(x)
        if self._fn is None:
            model = getattr(self.task, "model", None)
            if model is None:
                raise TypeError(f"a {self.task.name} run has no predict(); see dlx sample")
            model_state = self._run.state.model_state
            if hasattr(self.task, "logits"):  # classifiers, LMs: as their eval step scores
                task = self.task
                self._fn = jax.jit(lambda p, b: task.logits(p, b, model_state))
            else:
                self._fn = jax.jit(
                    lambda p, b: apply_model(model, p, b, model_state=model_state)[0]
                )
        n, out = len(x), []
        size = max(1, min(batch_size, n))
        for idx, mask in eval_batches(n, size):
            batch = {"x": x[idx], **{k: np.asarray(v)[idx] for k, v in extra.items()}}
            out.append(np.asarray(self._fn(self.params, batch))[mask])
        return np.concatenate(out) if out else np.zeros((0,))

    def predict(self, x: np.ndarray, batch_size: int = 1000, **extra: np.ndarray) -> np.ndarray:
        """Classifiers: class probabilities (N, C); regression: predictions; language
        models: next-token probabilities at each position."""
        out = self.outputs(x, batch_size, **extra)
        if self.task.name == "regress":
            return out
        z = out - out.max(-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(-1, keepdims=True)

    def classify(self, x: np.ndarray, batch_size: int = 1000, **extra: np.ndarray) -> np.ndarray:
        """Predicted class ids (argmax of the outputs)."""
        return self.outputs(x, batch_size, **extra).argmax(-1)


def load(run_dir: str | Path, kind: str = "best", step: int | None = None) -> Model:
    """The `kind` (best | latest) checkpoint of a run dir (or the one saved at `step`)."""
    from dlx.restore import load_run

    return Model(load_run(run_dir, kind=kind, step=step))

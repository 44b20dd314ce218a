"""`dlx explain RUN`: load the run's checkpoint and write what its model looks at into
<run dir>/explain/ (the methods live in dlx/explain)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dlx.errors import UserError
from dlx.explain import Explained, explain_model
from dlx.explain.suite import Options, parse_methods

__all__ = ["Options", "explain_run", "parse_methods"]


def explain_run(
    path: str | Path,
    n: int = 32,
    steps: int = 64,
    overrides: Sequence[str] = (),
    kind: str = "best",
    options: Options | None = None,
) -> Explained:
    """Load the run's `kind` checkpoint and write the figures that fit its model and data
    (`options`: the image methods, faithfulness and sanity check; see dlx.explain.suite)."""
    options = options or Options()
    options.check()
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}", hint="e.g. --n 16")
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}", hint="e.g. --steps 64")
    from dlx.restore import load_run

    run = load_run(path, overrides, kind)
    if run.model is None:
        raise UserError(
            f"{run.run_dir} trained a {run.task.name} task; dlx explain explains classifiers "
            "and language models",
            hint="run it on a classification or language-model run",
        )
    what = run.cfg.recipe
    if run.cfg.model.get("name") != what:
        what += f" ({run.cfg.model.get('name') or run.cfg.model.get('_target_')})"
    info = {"run_dir": str(run.run_dir), "checkpoint": kind, "step": run.step}
    return explain_model(
        run.model,
        run.state.params,
        run.data,
        run.run_dir / "explain",
        n=n,
        steps=steps,
        title=f"{what}, {kind} checkpoint, step {run.step}",
        info=info,
        options=options,
    )

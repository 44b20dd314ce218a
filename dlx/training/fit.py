"""A standard run: one phase over the training set (val evals, best checkpoint), then the
test split on the best params. The other kind of run is a continual stream
(dlx/continual/fit.py); both have this shape, which `dlx train` calls:

    schedule_steps(cfg, data) -> steps the lr schedule spans (for `build`)
    initial(setup, resume_dir) -> (state, start, host) before anything is written
    run(setup, session, state, start, host) -> trains, then session.end(...)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlx.setup import Setup, check_batches, standard_steps
from dlx.training.loop import LoopState, Phase, evaluate, train_loop
from dlx.training.step import with_weights


def eval_rows(data: Any) -> int:
    """The larger eval split: val and test batches are both sized for it (one traced eval
    step; the smaller split pads at most up to data.eval_batch_size)."""
    return max(len(data.x_val), len(data.x_test))


def init_from(path: str, state: Any) -> Any:
    """`state` with the best weights (params and model state, e.g. BatchNorm statistics) of
    another run, checked name by name against this model's."""
    import jax

    from dlx.checkpoint import compare_shapes
    from dlx.restore import load_run

    other = load_run(path, kind="best")

    def shapes(tree: Any) -> dict:
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        return {jax.tree_util.keystr(p): tuple(v.shape) for p, v in flat}

    for part in ("params", "model_state"):
        compare_shapes(
            shapes(getattr(other.state, part)),
            shapes(getattr(state, part)),
            f"init_from={path}",
            "fine-tune a model with the same architecture (model.* settings)",
        )
    return state.replace(params=other.state.params, model_state=other.state.model_state)


class StandardFit:
    name = "standard"
    schedule_steps = staticmethod(standard_steps)

    def initial(self, setup: Setup, resume_dir: Path | None) -> tuple[Any, LoopState | None, Any]:
        check_batches(setup, int(setup.cfg.data.batch_size))
        state = setup.init_state()
        if setup.cfg.init_from and resume_dir is None:
            state = init_from(setup.cfg.init_from, state)
        if resume_dir is None:
            return state, None, None
        from dlx.session import read_resume

        state, start, _ = read_resume(resume_dir, state)
        return state, start, None

    def summary_fields(self) -> dict:
        return {}

    def phase(self, setup: Setup, run_dir: Path | None = None) -> Phase:
        """The whole run as one phase; `run_dir` is where the task's epoch_end writes."""
        cfg, data, task, strategy = setup.cfg, setup.data, setup.task, setup.strategy
        val, train = task.host_batch(data.arrays("val")), data.arrays("train")

        def on_val(state: Any, epoch: int) -> dict:
            out = evaluate(task, state, val, cfg.data.eval_batch_size, strategy, eval_rows(data))
            rec = {f"val/{k}": v for k, v in out.items()}
            extra = task.epoch_end(strategy.unreplicate(state), epoch, run_dir)
            return {**rec, **{f"val/{k}": v for k, v in extra.items()}}

        return Phase(
            examples=len(data.x_train),
            batch_size=int(cfg.data.batch_size),
            total=setup.total_steps,
            make_batch=lambda idx, epoch: task.host_batch({k: v[idx] for k, v in train.items()}),
            evaluate=on_val,
            lr_at=lambda step: setup.schedule(step),
            seed=int(cfg.seed),
            eval_every=int(cfg.trainer.eval_every),
            reads_local=True,  # rows are plain indexing: each process reads only its own
            prefetch=int(data.prefetch),  # disk-backed data: rows read ahead
            read_threads=int(data.read_threads),
            order_block=int(data.order_block),
            order_window=int(data.order_window),
        )

    def run(
        self, setup: Setup, session: Any, state: Any, start: LoopState | None, host: Any
    ) -> None:
        cfg, strategy = setup.cfg, setup.strategy
        if cfg.init_from and session.resume is None:
            session.console.info(f"initialised from the best params of {cfg.init_from}")
        result = train_loop(
            cfg.trainer,
            self.phase(setup, session.run_dir),
            setup.task,
            strategy.place(state),
            strategy,
            session.io,
            start,
        )
        session.update(
            steps=result.steps,
            epochs=result.epochs_completed,
            best=result.loop.best,
            val=result.last_eval,
            samples_per_sec=result.samples_per_sec,
            train_time_s=result.train_time_s,
        )
        if result.stop not in ("preempted", "diverged"):
            test(setup, result, session)
        session.end(
            result.stop,
            result.steps,
            diverged_step=result.diverged_step,
            diverged_reason=result.diverged_reason,
        )


def test(setup: Setup, result: Any, session: Any) -> None:
    """Test metrics on the best params by the val metric (the final ones if no eval ran)."""
    strategy = setup.strategy
    state, tested = result.state, "final"
    if result.loop.best_weights is not None:
        best = with_weights(strategy.unreplicate(result.state), result.loop.best_weights)
        state, tested = strategy.place(best), f"best (step {result.loop.best.get('step')})"
    arrays = setup.task.host_batch(setup.data.arrays("test"))
    bs = setup.cfg.data.eval_batch_size
    out = evaluate(setup.task, state, arrays, bs, strategy, eval_rows(setup.data))
    out = {f"test/{k}": v for k, v in out.items()}
    session.metrics.write(
        {"step": result.steps, "epoch": result.epochs_completed, "checkpoint": tested, **out}
    )
    session.console.metrics_table(f"test, {tested} checkpoint", out)
    session.update(test=out, tested_checkpoint=tested)

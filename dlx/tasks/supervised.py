"""Supervised tasks: one model, one optimizer, a loss on (x, y).

- `classify`: cross-entropy and accuracy; labels < 0 are ignored (padding, empty replay
  slots). Optional continual-learning variations: a per-example head mask (`allowed`, a
  (B, C) bool in the batch: task-incremental learning) and the EWC penalty, carried in
  `state.extra` (Kirkpatrick et al. 2017; dlx/continual/ewc.py).
- `lm`: next-token cross-entropy; adds bits per character and perplexity.
- `regress`: mean squared error on float targets; MAE, RMSE and R^2.

Every one takes `precision` (trainer.precision: bf16 runs the model in bfloat16, the loss in
float32) and `grad_accum` (trainer.grad_accum: the batch's gradient summed over that many
micro-batches in one step); see dlx/training/step.py `to_compute` and `accumulate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

from dlx.config.targets import parameters
from dlx.errors import UserError, first_line
from dlx.tasks.augment import Augment
from dlx.tasks.base import Task
from dlx.training.step import (
    TrainState,
    accumulate,
    apply_gradients,
    averaged_model_state,
    example_mask,
    global_sum,
    masked_loss_and_hits,
    mean_grads,
    shard_mean,
    step_rng,
    to_compute,
)

NEG = -1e9  # logit of a class the head mask rules out
NO_AUGMENT = Augment()


def lm_metrics(loss: float) -> dict[str, float]:
    """A mean cross-entropy in nats per character as bits per character and perplexity
    (clamped: exp overflows past ~709 nats, and a diverged model's loss can be that big)."""
    return {"bits_per_char": loss / math.log(2), "perplexity": math.exp(min(loss, 700.0))}


# Batch entries a model is given besides x, by keyword, when the data has them.
MODEL_INPUTS = ("lengths",)


def apply_model(
    model: Any,
    params: Any,
    batch: dict,
    rng: Any = None,
    precision: str = "fp32",
    model_state: Any = None,
) -> tuple[jax.Array, Any]:
    """The model on a batch: (output, model state after it). Train mode (dropout from `rng`)
    when `rng` is given; extra inputs the data carries (`lengths` of padded sequences) by
    keyword.

    `model_state`: the variable collections besides "params" (BatchNorm's `batch_stats`).
    In train mode they are mutable and come back updated; in eval mode they are read only
    and come back as given. Without any, the program is the params-only apply.

    precision=bf16: params and floating inputs cast to bfloat16 here, so any Flax model runs
    in bf16 without being written for it; the output comes back as float32, so the loss, its
    reduction and the metrics are float32, and so are the gradients of the float32 params.
    The model state is not cast (running statistics stay float32).
    """
    train, state = rng is not None, model_state or {}
    x, extra = batch["x"], {k: batch[k] for k in MODEL_INPUTS if k in batch}
    rngs = {"dropout": rng} if train else {}
    if precision != "fp32":
        params, x, extra = to_compute((params, x, extra), precision)
    variables = {"params": params, **state}
    if train and state:
        out, updated = model.apply(
            variables, x, train=True, rngs=rngs, mutable=list(state), **extra
        )
        state = {**state, **updated}
    else:
        out = model.apply(variables, x, train=train, rngs=rngs, **extra)
    return (out if precision == "fp32" else out.astype(jnp.float32)), state


# Collections `init` returns that are not model state: sown values for inspection
# (`dlx explain` asks for them explicitly), recomputed by every call that wants them.
NOT_STATE = ("params", "intermediates")


class _WithModelState:
    """A Flax module whose non-parameter collections are fixed to given values: its `apply`
    adds them to the variables it is called with; every other attribute is the module's."""

    def __init__(self, module: Any, model_state: dict) -> None:
        self._module, self._model_state = module, model_state

    def apply(self, variables: Any, *args: Any, **kwargs: Any) -> Any:
        return self._module.apply({**self._model_state, **variables}, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def with_model_state(module: Any, model_state: dict) -> Any:
    """`module` with its running statistics (`model_state`) bound for eval-mode calls, so
    code written for params-only models (`dlx explain`'s methods) evaluates it as trained."""
    return _WithModelState(module, model_state) if model_state else module


def init_variables(model: Any, rng: Any, example: dict) -> tuple[Any, dict]:
    """The model's initial (params, model state); the state holds every collection but
    params and sown intermediates (BatchNorm's batch_stats, a user's own counters)."""
    extra = {k: example[k] for k in MODEL_INPUTS if k in example}
    takes = parameters(type(model).__call__)
    for key in extra:
        if key not in takes and not any(p.startswith("**") for p in takes):
            raise UserError(
                f"the data has `{key}` (padded sequences) but model {type(model).__name__} "
                f"does not take a `{key}` argument, so it would read the padding as data",
                hint="use a sequence model (model=rnn|cnn1d|transformer_cls), or give your "
                f"module's __call__ a `{key}: jax.Array | None = None` argument",
            )
    init = jax.jit(lambda r, x, kw: model.init(r, x, **kw))
    try:
        variables = dict(init(rng, example["x"], extra))
    except (ValueError, TypeError) as err:  # settings that do not fit together or the data
        raise UserError(
            f"cannot build model {type(model).__name__} on this data: {first_line(err)}",
            hint="check the model.* settings (`dlx show`) against the data's shape; "
            "--debug shows where it failed",
        ) from err
    state = {k: v for k, v in variables.items() if k not in NOT_STATE}
    return variables["params"], state


def device_mean(x: Any, axis: str | None) -> Any:
    return x if axis is None else jax.lax.pmean(x, axis)


@dataclass(frozen=True)
class Classify(Task):
    model: Any
    ewc_lambda: float = 0.0  # > 0: state.extra holds {"fisher", "anchor"} (continual, EWC)
    precision: str = "fp32"  # trainer.precision: the model's compute dtype
    grad_accum: int = 1  # trainer.grad_accum: micro-batches per update
    augment: Augment = NO_AUGMENT  # augment.*: image augmentation in train steps only
    label_smoothing: float = 0.0  # task.label_smoothing: train loss only (eval: plain CE)
    metrics: ClassVar[tuple[str, ...] | None] = ("loss", "accuracy", "count")
    name: ClassVar[str] = "classify"

    def init(self, rng: Any, example: dict, tx: Any) -> TrainState:
        init_rng, dropout_rng = jax.random.split(rng)
        params, model_state = init_variables(self.model, init_rng, example)
        extra = None
        if self.ewc_lambda > 0:
            from dlx.continual.ewc import empty_penalty

            extra = {"ewc": empty_penalty(params)}
        return TrainState.create(self.model.apply, params, tx, dropout_rng, extra, model_state)

    def forward(
        self, params: Any, batch: dict, rng: Any = None, model_state: Any = None
    ) -> tuple[jax.Array, Any]:
        """(logits, model state after them): train mode (augmentation, dropout, batch
        statistics updated) when `rng` is given."""
        if rng is not None and self.augment:  # train mode; off: the program is unchanged
            rng, key = jax.random.split(rng)
            batch = {**batch, "x": self.augment(batch["x"], key)}
        out, model_state = apply_model(self.model, params, batch, rng, self.precision, model_state)
        if "allowed" in batch:  # head mask: only this example's task's classes
            out = jnp.where(batch["allowed"], out, NEG)
        return out, model_state

    def logits(self, params: Any, batch: dict, model_state: Any = None) -> jax.Array:
        """Eval-mode logits (the running statistics read, not updated). With
        augment.eval_flip, the log of the mean of the image's and its mirror's class
        probabilities (log-probabilities are logits of the same distribution)."""
        out = self.forward(params, batch, None, model_state)[0]
        if not self.augment.eval_flip:
            return out
        mirror = {**batch, "x": batch["x"][:, :, ::-1, :]}
        both = jnp.stack(
            [
                jax.nn.log_softmax(out, axis=-1),
                jax.nn.log_softmax(self.forward(params, mirror, None, model_state)[0], axis=-1),
            ]
        )
        return jax.nn.logsumexp(both, axis=0) - jnp.log(2.0)

    @property
    def has_penalty(self) -> bool:
        """Does `penalty` return a term (EWC here; SI's subclass)?"""
        return self.ewc_lambda > 0

    def penalty(self, params: Any, extra: Any) -> jax.Array | None:
        if self.ewc_lambda <= 0:
            return None
        from dlx.continual.ewc import penalty_value

        return 0.5 * self.ewc_lambda * penalty_value(extra["ewc"], params)

    def train_step(self, state: TrainState, batch: dict, axis: str | None) -> tuple[Any, dict]:
        rng, y, n = step_rng(state, axis), batch["y"], self.grad_accum
        # The whole batch's label count: each micro-batch's sum is divided by it, so the
        # micro-batches' gradients add up to the gradient of the whole batch's mean.
        count = jnp.maximum(global_sum((y >= 0).sum().astype(jnp.float32), axis), 1.0)

        def objective(params: Any, part: dict, key: Any) -> tuple[jax.Array, tuple]:
            logits, model_state = self.forward(params, part, key, state.model_state)
            loss, hits, _ = masked_loss_and_hits(logits, part["y"], self.label_smoothing)
            data = shard_mean(loss.sum(), count, axis)
            more = self.batch_term(logits, part, state.extra)  # per example, like the loss
            if more is not None:
                data = data + shard_mean(more.sum(), count, axis)
            reg = self.penalty(params, state.extra) if n == 1 else None
            return (data if reg is None else data + reg), (data, hits.sum(), reg, model_state)

        def value_and_grads(part: dict, key: Any) -> tuple:
            return jax.value_and_grad(objective, has_aux=True)(state.params, part, key)

        (_, (data, hits, reg, model_state)), grads = accumulate(value_and_grads, batch, n, rng)
        state = state.replace(model_state=averaged_model_state(model_state, n, axis))
        if n > 1 and self.has_penalty:  # the penalty once per update, not per micro-batch
            reg, reg_grads = jax.value_and_grad(self.penalty)(state.params, state.extra)
            grads = jax.tree_util.tree_map(jnp.add, grads, reg_grads)
        grads = mean_grads(grads, axis)
        metrics = {
            "loss": device_mean(data, axis),
            "accuracy": global_sum(hits, axis) / count,
            "grad_norm": optax.tree.norm(grads),
        }
        if reg is not None:
            metrics["ce"], metrics["penalty"] = metrics["loss"], reg
            metrics["loss"] = metrics["loss"] + reg
        return self.update(state, grads), metrics

    def batch_term(self, logits: jax.Array, batch: dict, extra: Any) -> jax.Array | None:
        """A further per-example loss term on the batch (continual LwF's distillation), added
        to the cross-entropy; None: nothing to add."""
        return None

    def update(self, state: TrainState, grads: Any) -> TrainState:
        """The optimizer step with `grads` (continual SI also tracks each weight's share of
        the loss decrease here)."""
        return apply_gradients(state, grads)

    def eval_step(self, state: TrainState, batch: dict, axis: str | None) -> dict:
        logits = self.logits(state.params, batch, state.model_state)
        loss, hits, valid = masked_loss_and_hits(logits, batch["y"])
        m = example_mask(batch["mask"], batch["y"])
        sums = {
            "loss_sum": (loss * m).sum(),
            "correct": (hits * m).sum(),
            "labels": (valid * m).sum(),  # = examples for classifiers, tokens for LMs
            "count": batch["mask"].astype(jnp.float32).sum(),
        }
        return global_sum(sums, axis)

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(float(sums["labels"]), 1.0)
        return {
            "loss": float(sums["loss_sum"]) / n,
            "accuracy": float(sums["correct"]) / n,
            "count": int(sums["count"]),
        }


@dataclass(frozen=True)
class LanguageModel(Classify):
    """Next-token prediction: y (B, T) are the next tokens; loss is nats per token."""

    name: ClassVar[str] = "lm"
    metrics: ClassVar[tuple[str, ...] | None] = (
        "loss", "accuracy", "count", "bits_per_char", "perplexity",
    )  # fmt: skip
    best_metric: ClassVar[str] = "val/loss"
    best_mode: ClassVar[str] = "min"

    def init(self, rng: Any, example: dict, tx: Any) -> TrainState:
        if np.ndim(example["y"]) < 2:  # one label per example: that is classification
            raise UserError(
                f"task=lm needs next-token targets y of shape (batch, time); this data's y "
                f"has shape {tuple(np.shape(example['y']))} (one label per example)",
                hint="use task=classify for labelled examples, or text data (data=text)",
            )
        return super().init(rng, example, tx)

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        out = super().summarize(sums)
        return {**out, **lm_metrics(out["loss"])}


@dataclass(frozen=True)
class Regress(Task):
    """Float targets y (B,) or (B, k); the model's outputs are the predictions."""

    model: Any
    precision: str = "fp32"  # trainer.precision: the model's compute dtype
    grad_accum: int = 1  # trainer.grad_accum: micro-batches per update
    name: ClassVar[str] = "regress"
    metrics: ClassVar[tuple[str, ...] | None] = ("loss", "mae", "rmse", "r2", "count")
    best_metric: ClassVar[str] = "val/loss"
    best_mode: ClassVar[str] = "min"
    shown: ClassVar[tuple[str, ...]] = ("loss", "mae")

    def init(self, rng: Any, example: dict, tx: Any) -> TrainState:
        init_rng, dropout_rng = jax.random.split(rng)
        params, model_state = init_variables(self.model, init_rng, example)
        return TrainState.create(self.model.apply, params, tx, dropout_rng, None, model_state)

    def predict(
        self, params: Any, batch: dict, rng: Any = None, model_state: Any = None
    ) -> tuple[jax.Array, Any]:
        """(predictions (B, k), model state after them); train mode when `rng` is given."""
        out, model_state = apply_model(self.model, params, batch, rng, self.precision, model_state)
        return out.reshape(out.shape[0], -1), model_state

    def train_step(self, state: TrainState, batch: dict, axis: str | None) -> tuple[Any, dict]:
        rng = step_rng(state, axis)
        count = global_sum(jnp.asarray(batch["y"].size, jnp.float32), axis)  # whole batch

        def objective(params: Any, part: dict, key: Any) -> tuple[jax.Array, jax.Array]:
            y = part["y"].reshape(part["y"].shape[0], -1)
            out, model_state = self.predict(params, part, key, state.model_state)
            err = out - y
            return shard_mean(jnp.square(err).sum(), count, axis), (jnp.abs(err).sum(), model_state)

        def value_and_grads(part: dict, key: Any) -> tuple:
            return jax.value_and_grad(objective, has_aux=True)(state.params, part, key)

        (mse, (abs_sum, model_state)), grads = accumulate(
            value_and_grads, batch, self.grad_accum, rng
        )
        state = state.replace(model_state=averaged_model_state(model_state, self.grad_accum, axis))
        grads = mean_grads(grads, axis)
        metrics = {
            "loss": device_mean(mse, axis),
            "mae": global_sum(abs_sum, axis) / count,
            "grad_norm": optax.tree.norm(grads),
        }
        return apply_gradients(state, grads), metrics

    def eval_step(self, state: TrainState, batch: dict, axis: str | None) -> dict:
        y = batch["y"].reshape(batch["y"].shape[0], -1)
        m = example_mask(batch["mask"], y)
        err = (self.predict(state.params, batch, None, state.model_state)[0] - y) * m
        sums = {
            "sse": jnp.square(err).sum(),
            "sae": jnp.abs(err).sum(),
            "sy": (y * m).sum(),
            "syy": (jnp.square(y) * m).sum(),
            "values": (m * jnp.ones_like(y)).sum(),
            "count": batch["mask"].astype(jnp.float32).sum(),
        }
        return global_sum(sums, axis)

    def summarize(self, sums: dict[str, float]) -> dict[str, float]:
        n = max(float(sums["values"]), 1.0)
        mse = float(sums["sse"]) / n
        total = float(sums["syy"]) - float(sums["sy"]) ** 2 / n  # sum of (y - mean y)^2
        return {
            "loss": mse,
            "mae": float(sums["sae"]) / n,
            "rmse": math.sqrt(mse),
            "r2": 1.0 - float(sums["sse"]) / total if total > 0 else float("nan"),
            "count": int(sums["count"]),
        }

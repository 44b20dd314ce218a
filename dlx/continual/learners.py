"""LwF, SI and A-GEM: continual strategies that are variations of the classify task's step, not
loops of their own. Both carry what they need through the stream in `state.extra` (so it is
checkpointed, resumed and replicated with the params) and change it at each task's end
(`end_task`, called by dlx/continual/fit.py on one-device state).

- LwF (Li & Hoiem 2017; the class-incremental form of van de Ven & Tolias 2019): the model
  at the end of the previous task is the teacher; on every batch, the new model's outputs
  of earlier tasks' classes are pulled towards the teacher's, softened by a temperature T:
  loss = CE + alpha * T^2 * KL(softmax(teacher/T) || softmax(student/T)) over those classes.
- SI (Zenke et al. 2017): each weight's importance is accumulated online, w += -g * dtheta
  at every step (g the gradient the step followed, dtheta the update it made: the weight's
  share of the loss decrease), and turned into omega += w / ((theta_end - theta_start)^2 +
  xi) at the task's end; the penalty c * sum omega (theta - theta_start_of_next)^2 keeps the
  important weights where the earlier tasks left them.
- A-GEM (Chaudhry et al. 2019): the batch carries memory rows (the replay buffer's,
  `batch["replay"]` marks them); the step takes the gradient g of the current rows and g_ref
  of the memory rows, and where g would raise the memory loss (g . g_ref < 0) follows
  g - (g . g_ref / g_ref . g_ref) g_ref instead. The memory is the reservoir buffer of
  `replay` (uniform over the stream) rather than A-GEM's per-task slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from dlx.tasks.supervised import NEG, Classify, apply_model, device_mean
from dlx.training.step import (
    TrainState,
    accumulate,
    apply_gradients,
    averaged_model_state,
    global_sum,
    masked_loss_and_hits,
    mean_grads,
    shard_mean,
    step_rng,
)

_tree = jax.tree_util.tree_map


@dataclass(frozen=True)
class LwF(Classify):
    alpha: float = 1.0  # continual.lwf_alpha: weight of the distillation term
    temperature: float = 2.0  # continual.temperature
    name: ClassVar[str] = "classify"

    def init(self, rng: Any, example: dict, tx: Any) -> TrainState:
        state = super().init(rng, example, tx)
        shape = jax.eval_shape(lambda: self.logits(state.params, example, state.model_state))
        outputs = int(shape.shape[-1])
        teacher = {
            "params": state.params,
            "model_state": state.model_state,
            "old": jnp.zeros(outputs, bool),
        }
        return state.replace(extra={**state.extra, "lwf": teacher})

    def batch_term(self, logits: jax.Array, batch: dict, extra: Any) -> jax.Array | None:
        lwf = extra["lwf"]
        teacher, old = lwf["params"], lwf["old"]
        target = jax.lax.stop_gradient(
            apply_model(self.model, teacher, batch, None, self.precision, lwf["model_state"])[0]
        )
        t = self.temperature
        p = jax.nn.softmax(jnp.where(old, target / t, NEG), axis=-1)
        log_q = jax.nn.log_softmax(jnp.where(old, logits / t, NEG), axis=-1)
        log_p = jnp.log(jnp.where(old, p, 1.0))
        kl = jnp.sum(jnp.where(old, p * (log_p - log_q), 0.0), axis=-1)
        valid = (batch["y"] >= 0).astype(jnp.float32)  # padding and empty replay rows: none
        return self.alpha * t * t * kl * valid  # 0 before any task is finished: `old` is empty

    def end_task(self, state: TrainState, outputs: np.ndarray) -> TrainState:
        """The finished task's model becomes the teacher; its outputs join the old ones."""
        lwf = state.extra["lwf"]
        teacher = {
            "params": state.params,
            "model_state": state.model_state,
            "old": jnp.logical_or(lwf["old"], outputs),
        }
        return state.replace(extra={**state.extra, "lwf": teacher})


@dataclass(frozen=True)
class SI(Classify):
    c: float = 1.0  # continual.si_c: strength of the penalty
    xi: float = 0.1  # continual.si_xi: damping of omega where a weight barely moved
    name: ClassVar[str] = "classify"

    def init(self, rng: Any, example: dict, tx: Any) -> TrainState:
        state = super().init(rng, example, tx)
        zeros = _tree(jnp.zeros_like, state.params)
        si = {"w": zeros, "omega": zeros, "anchor": state.params}
        return state.replace(extra={**state.extra, "si": si})

    has_penalty: ClassVar[bool] = True

    def penalty(self, params: Any, extra: Any) -> jax.Array | None:
        si = extra["si"]
        terms = _tree(
            lambda o, p, a: jnp.sum(o * jnp.square(p - a)), si["omega"], params, si["anchor"]
        )
        return self.c * sum(jax.tree_util.tree_leaves(terms))

    def update(self, state: TrainState, grads: Any) -> TrainState:
        new = apply_gradients(state, grads)
        si = new.extra["si"]
        w = _tree(lambda w, g, p1, p0: w - g * (p1 - p0), si["w"], grads, new.params, state.params)
        return new.replace(extra={**new.extra, "si": {**si, "w": w}})

    def end_task(self, state: TrainState, outputs: np.ndarray) -> TrainState:
        si = state.extra["si"]

        def omega(o: jax.Array, w: jax.Array, p: jax.Array, a: jax.Array) -> jax.Array:
            # w clipped at 0: a negative importance would reward moving the weight away
            return o + jnp.maximum(w, 0.0) / (jnp.square(p - a) + self.xi)

        merged = {
            "omega": _tree(omega, si["omega"], si["w"], state.params, si["anchor"]),
            "w": _tree(jnp.zeros_like, si["w"]),
            "anchor": state.params,
        }
        return state.replace(extra={**state.extra, "si": merged})


def _vdot(a: Any, b: Any) -> jax.Array:
    return sum(
        jnp.vdot(x, y)
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True)
    )


@dataclass(frozen=True)
class AGEM(Classify):
    name: ClassVar[str] = "classify"

    def train_step(self, state: TrainState, batch: dict, axis: str | None) -> tuple[Any, dict]:
        rng, y, memory = step_rng(state, axis), batch["y"], batch["replay"]
        current, past = (y >= 0) & ~memory, (y >= 0) & memory  # empty buffer slots: -1

        def count(rows: jax.Array) -> jax.Array:
            return jnp.maximum(global_sum(rows.sum().astype(jnp.float32), axis), 1.0)

        # Each row's weight in its part's mean (shard_mean is linear in the sum it is given).
        weight = jnp.where(current, shard_mean(1.0, count(current), axis), 0.0) + jnp.where(
            past, shard_mean(1.0, count(past), axis), 0.0
        )

        def both_gradients(part: dict, key: Any) -> tuple:
            """One forward pass, two backward passes: the current rows' gradient and the
            memory rows' (each row's loss weighted into its own part's mean)."""

            def losses(params: Any) -> tuple[jax.Array, tuple]:
                logits, model_state = self.forward(params, part, key, state.model_state)
                loss, hits, _ = masked_loss_and_hits(logits, part["y"], self.label_smoothing)
                return loss * part["weight"], (hits, model_state)

            weighted, backward, (hits, model_state) = jax.vjp(losses, state.params, has_aux=True)
            mem = part["replay"]
            (g,) = backward(jnp.where(mem, 0.0, 1.0))
            (g_ref,) = backward(jnp.where(mem, 1.0, 0.0))
            loss, hits = jnp.where(mem, 0.0, weighted).sum(), jnp.where(mem, 0, hits).sum()
            return loss, hits, g, g_ref, model_state

        loss, hits, g, g_ref, model_state = accumulate(
            both_gradients, {**batch, "weight": weight}, self.grad_accum, rng
        )
        state = state.replace(model_state=averaged_model_state(model_state, self.grad_accum, axis))
        g, g_ref = mean_grads(g, axis), mean_grads(g_ref, axis)  # g_ref 0 while memory is empty
        accuracy = global_sum(hits, axis) / count(current)
        dot = _vdot(g, g_ref)
        scale = jnp.where(dot < 0, dot / jnp.maximum(_vdot(g_ref, g_ref), 1e-20), 0.0)
        g = _tree(lambda a, r: a - scale * r, g, g_ref)
        metrics = {
            "loss": device_mean(loss, axis),
            "accuracy": accuracy,
            "grad_norm": jnp.sqrt(_vdot(g, g)),
            "projected": (dot < 0).astype(jnp.float32),
        }
        return apply_gradients(state, g), metrics


def continual_task(settings: Any, model: Any, numerics: dict) -> Classify:
    """The classify task of `continual.strategy` (lwf, si or agem) with its settings."""
    if settings.get("strategy") == "agem":
        return AGEM(model, **numerics)
    if settings.get("strategy") == "lwf":
        alpha, t = float(settings.get("lwf_alpha", 1.0)), float(settings.get("temperature", 2.0))
        return LwF(model, alpha=alpha, temperature=t, **numerics)
    return SI(
        model, c=float(settings.get("si_c", 1.0)), xi=float(settings.get("si_xi", 0.1)), **numerics
    )

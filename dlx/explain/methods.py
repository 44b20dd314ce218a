"""SmoothGrad, Grad-CAM and occlusion for image classifiers (NHWC inputs), on any linen model.

- SmoothGrad (Smilkov et al. 2017): the input gradient of the target logit averaged over
  `samples` copies of x with Gaussian noise of standard deviation sigma added.
- Grad-CAM (Selvaraju et al. 2017): ReLU(sum_k alpha_k A^k) where A is a conv layer's output,
  rectified (a flax Conv has no activation: A = ReLU(conv output), the maps the next layer
  sees in a conv-ReLU CNN), and alpha_k the spatial mean of d logit / d (conv output)_k,
  bilinearly upsampled to the input. The
  layer's output is reached with `flax.linen.intercept_methods`: its __call__ is wrapped to add
  a zero array to what it returns, and the gradient with respect to that array is the gradient
  with respect to the activation. Nothing in the model has to be written for it.
- Occlusion (Zeiler & Fergus 2014): each patch (size x size, moved by stride) is set to the
  baseline (0: the mean of standardised data); a pixel's attribution is the mean drop of the
  target logit over the patches that cover it.

Every method is one compiled program reused chunk by chunk, so the number of examples,
samples or patches never means a new compile.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dlx.errors import UserError

Score = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


# ---------------------------------------------------------------------------- SmoothGrad
def smoothgrad(
    score: Score,
    x: Any,
    target: Any,
    sigma: float,
    samples: int = 32,
    seed: int = 0,
    chunk: int = 8,
) -> np.ndarray:
    """The mean input gradient of the target logit over `samples` noisy copies (shape of x)."""
    x, target = jnp.asarray(x), jnp.asarray(target)

    @jax.jit
    def chunk_sum(x, target, noise, weights):  # noise: (c, n, ...); weights (c,): 0 = padding
        def total(points):
            return (score(points, jnp.tile(target, len(noise))) * jnp.repeat(weights, len(x))).sum()

        points = (x[None] + noise).reshape(-1, *x.shape[1:])
        return jax.grad(total)(points).reshape(noise.shape).sum(0)

    key = jax.random.PRNGKey(seed)
    acc = jnp.zeros_like(x)
    for start in range(0, samples, chunk):
        weights = (jnp.arange(chunk) < samples - start).astype(x.dtype)
        noise = sigma * jax.random.normal(jax.random.fold_in(key, start), (chunk, *x.shape))
        acc = acc + chunk_sum(x, target, noise.astype(x.dtype), weights)
    return np.asarray(acc / samples)


# ---------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class Layer:
    path: str  # module path, e.g. "Conv_1" or "encoder/Block_2/Conv_0"
    kind: str  # the module's class name
    shape: tuple[int, ...]  # its output's shape for the probed batch
    conv: bool  # a 2-D convolution (flax.linen Conv / ConvLocal)


def _path(module: nn.Module) -> str:
    return "/".join(str(p) for p in module.path)


def _is_conv(module: nn.Module) -> bool:
    conv_types = tuple(
        t for t in (getattr(nn.linear, "_Conv", None), nn.Conv, nn.ConvLocal) if t is not None
    )
    return isinstance(module, conv_types)


def model_layers(model: nn.Module, params: Any, x: Any) -> list[Layer]:
    """Every submodule called in a forward pass, in call order, with its output shape (from
    shapes only: nothing is computed). A module called twice is listed once (its first call)."""
    found: dict[str, Layer] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and module.path and hasattr(out, "shape"):
            path = _path(module)
            if path not in found:
                found[path] = Layer(
                    path,
                    type(module).__name__,
                    tuple(out.shape),
                    _is_conv(module) and out.ndim == 4,
                )
        return out

    def run(params, x):
        with nn.intercept_methods(record):
            return model.apply({"params": params}, x, train=False)

    jax.eval_shape(run, params, jnp.asarray(x[:1]))
    return list(found.values())


def pick_layer(layers: list[Layer], name: str | None, method: str = "gradcam") -> Layer:
    """The layer Grad-CAM reads: `name`, or the last 2-D conv layer in call order."""
    convs = [lay for lay in layers if lay.conv]
    listed = ", ".join(lay.path for lay in convs) or "none"
    if name is None:
        if not convs:
            raise UserError(
                f"{method} needs a 2-D convolutional layer and this model has none",
                hint="name a layer with a (batch, height, width, channels) output with "
                "--layer PATH, or leave gradcam out: --methods saliency,integrated_gradients,"
                "smoothgrad,occlusion",
            )
        return convs[-1]
    name = name.strip("/")
    for lay in layers:
        if lay.path == name:
            if len(lay.shape) != 4:
                raise UserError(
                    f"--layer {name} ({lay.kind}) outputs shape {lay.shape[1:]} per example; "
                    f"{method} needs a spatial (height, width, channels) feature map",
                    hint=f"conv layers of this model: {listed}",
                )
            return lay
    raise UserError(
        f"--layer {name}: no such layer in this model",
        hint=f"conv layers of this model: {listed} (module paths, e.g. --layer {convs[-1].path})"
        if convs
        else "this model has no conv layer; module paths: " + ", ".join(lay.path for lay in layers),
    )


# ---------------------------------------------------------------------------- Grad-CAM
def layer_apply(model: nn.Module, layer: str) -> Callable[..., tuple[Any, Any]]:
    """apply(params, x, eps) -> (logits, activation of `layer`): the layer's output plus eps
    (eps None: unchanged), so d logits / d eps is the gradient at that activation."""

    def apply(params: Any, x: Any, eps: Any) -> tuple[Any, Any]:
        store: dict[str, Any] = {}

        def intercept(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            if (
                context.method_name == "__call__"
                and "a" not in store
                and context.module.path
                and _path(context.module) == layer
            ):
                store["a"] = out
                if eps is not None:
                    out = out + eps
            return out

        with nn.intercept_methods(intercept):
            logits = model.apply({"params": params}, x, train=False)
        if "a" not in store:
            raise ValueError(f"layer {layer} was not called in the forward pass")
        return logits, store["a"]

    return apply


def gradcam_fn(model: nn.Module, layer: str) -> Callable[..., tuple[jnp.ndarray, jnp.ndarray]]:
    """A jitted (params, x, target) -> (cam at the layer's resolution (n, h, w), cam upsampled
    to the input (n, H, W))."""
    apply = layer_apply(model, layer)

    @jax.jit
    def cam(params, x, target):
        shape = jax.eval_shape(lambda p, x: apply(p, x, None)[1], params, x)

        def logit(eps):
            logits, a = apply(params, x, eps)
            return jnp.take_along_axis(logits, target[:, None], -1).sum(), a

        grad, a = jax.grad(logit, has_aux=True)(jnp.zeros(shape.shape, shape.dtype))
        alpha = grad.mean(axis=(1, 2))  # (n, C): the channels' weights
        # the rectified maps: a flax Conv has no activation of its own, and its raw output's
        # negative part (zeroed by the ReLU after it in a CNN) would cancel the positive one
        low = jax.nn.relu(jnp.einsum("nhwc,nc->nhw", jax.nn.relu(a), alpha))
        high = jax.image.resize(low, (x.shape[0], *x.shape[1:3]), "bilinear")
        return low, high

    return cam


def gradcam(
    model: nn.Module, params: Any, x: Any, target: Any, layer: str, chunk: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    cam = gradcam_fn(model, layer)
    return _chunked(lambda xs, ts: cam(params, xs, ts), x, target, chunk)


def _chunked(fn: Callable, x: Any, target: Any, chunk: int) -> Any:
    """fn over fixed-size chunks of the examples (the last padded), results concatenated."""
    x, target = np.asarray(x), np.asarray(target)
    n = len(x)
    size = min(chunk, n)
    outs = []
    for i in range(0, n, size):
        xs, ts = x[i : i + size], target[i : i + size]
        pad = size - len(xs)
        if pad:
            xs = np.concatenate([xs, np.repeat(xs[:1], pad, 0)])
            ts = np.concatenate([ts, np.repeat(ts[:1], pad, 0)])
        keep = size - pad
        outs.append(jax.tree.map(lambda a, keep=keep: np.asarray(a)[:keep], fn(xs, ts)))
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)


# ---------------------------------------------------------------------------- occlusion
def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Start offsets along one side: every `stride`, plus the last one flush with the edge."""
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def occlusion_masks(height: int, width: int, patch: int, stride: int) -> np.ndarray:
    """(P, H, W) float masks, 1 inside each patch."""
    masks = []
    for i in patch_starts(height, patch, stride):
        for j in patch_starts(width, patch, stride):
            m = np.zeros((height, width), np.float32)
            m[i : i + patch, j : j + patch] = 1.0
            masks.append(m)
    return np.stack(masks)


def occlusion(
    score: Score,
    x: Any,
    target: Any,
    patch: int,
    stride: int,
    baseline: float = 0.0,
    chunk: int = 16,
) -> np.ndarray:
    """(n, H, W): each pixel's mean drop of the target logit when a patch covering it is set
    to `baseline` (positive: the pixels support the class)."""
    x, target = jnp.asarray(x), jnp.asarray(target)
    n, height, width = x.shape[:3]
    if not 1 <= patch <= min(height, width):
        raise ValueError(f"patch {patch} does not fit a {height}x{width} image")
    masks = occlusion_masks(height, width, patch, stride)
    pad = -len(masks) % chunk  # all-zero masks occlude nothing: a drop of 0, no weight
    masks = np.concatenate([masks, np.zeros((pad, height, width), np.float32)])

    @jax.jit
    def chunk_sum(x, target, full, m):  # m: (c, H, W)
        mm = m[:, None, :, :, None]
        points = (x[None] * (1 - mm) + baseline * mm).reshape(-1, *x.shape[1:])
        drops = full[None] - score(points, jnp.tile(target, len(m))).reshape(len(m), -1)
        return jnp.einsum("cn,chw->nhw", drops, m)

    full = jax.jit(score)(x, target)
    total = jnp.zeros((n, height, width), x.dtype)
    for i in range(0, len(masks), chunk):
        total = total + chunk_sum(x, target, full, jnp.asarray(masks[i : i + chunk]))
    count = masks.sum(0)
    return np.asarray(total) / np.maximum(count, 1.0)

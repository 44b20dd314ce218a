"""JAX runtime set-up that must happen before any other JAX call: the multi-host distributed
runtime, the number of CPU devices and XLA's flags.

CPU defaults, measured on a 2-core machine (README "Performance"; benchmarks/vs_pytorch.py and
end_to_end.py; medians of rounds alternated within one run):

- Split the batch over fake CPU devices only where it pays: for a model that convolves, and
  only as far as each device keeps >= 32 examples and >= 16 MNIST images' worth of input
  values (12,544) per step, up to 8 devices that divide the per-process batch evenly.
  CNN recipe (batch 128): 4 devices. Samples/s against one device (sharded; parallel_scaling.py,
  5 rounds): 2 devices 1.66x, 4 devices 1.83x, 8 devices 1.40x. XLA:CPU runs a device's ops
  one after another, and a smaller per-device batch keeps a conv net's activations in cache
  (one device alone: batch 64 ran 1.6x the samples/s of batch 128). cnn_small (batch 32):
  2 devices 0.73x, so 1. Before max-pool became a reshape (dlx/models/pooling.py) its
  gradient ran on one thread and 8 devices of 16 examples won (2.2-2.9x); that rule, kept
  after the fix, measured 0.84x of 4 devices. Everything else lost, to the per-step all-reduce
  and per-device dispatch: 8 devices (2) ran an MLP 784-400-10 at 0.14x (0.51x), the GRU of
  rnn_rows 0.32x (0.88x), cnn1d on MNIST-1D's 40 values 0.34x (0.87x), digits 0.20x (0.77x).
- Models that attend (a batched matmul: attention scores) split over as many devices as there
  are cores (each keeping >= 8 sequences): the score/softmax/weighted-sum chain is many small
  ops that one device runs one after another. Sharded over 2 devices against 1 (idle, 6
  rounds each, two runs): transformer LM recipe (batch 32 x 128 tokens) 1.29x (4 devices
  1.20x), transformer_cls (batch 128 x 10 patches) 1.52x.
- `--xla_cpu_collective_call_terminate_timeout_seconds=600`: with XLA's default (40 s), 8 of
  15 short `dlx train recipe=transformer parallel.cpu_devices=2` runs aborted in the
  in-process all-reduce rendezvous ("Termination timeout ... exceeded"), in the first train
  step or the test evaluation; with the flag set, 10 of 10 ran and none even logged the
  20 s "may be stuck" warning. Why setting the timeout changes the waits is not understood
  (XLA's rendezvous code); the flag is kept for every run with several CPU devices.
- XLA speed flags: none beyond XLA's own defaults. Its YNNPACK fusions (on by default in this
  jaxlib; they run the convolutions and dots) are worth 1.4x here: turning them off
  (`--xla_cpu_experimental_ynn_fusion_type=`) gave 0.71x. `--xla_cpu_use_onednn`,
  `--xla_cpu_use_xnnpack`, `--xla_cpu_experimental_onednn_custom_call` and the oneDNN/XNN
  fusion types leave the compiled step unchanged; `--xla_cpu_multi_thread_eigen=false` 0.98x,
  `--xla_cpu_enable_fast_math=true` 1.01x, YNN on every fusion type 1.02x: noise.

Every default is overridable: `parallel.cpu_devices=N` (XLA_FLAGS'
`--xla_force_host_platform_device_count` wins over it), `parallel.xla_flags="--flag=value"`
(added to XLA_FLAGS; the same flag in the environment's XLA_FLAGS wins).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

from dlx.errors import UserError

MAX_AUTO_CPU_DEVICES = 8
MIN_EXAMPLES_PER_DEVICE = 32
MIN_INPUT_PER_DEVICE = 16 * 28 * 28  # input values per device per step: 16 MNIST images
MIN_SEQUENCES_PER_DEVICE = 8  # attention models: sequences per device per step
# Measured (see above): no speed flag beats XLA's defaults; the collective timeout keeps runs
# on several fake CPU devices from aborting.
DEFAULT_XLA_FLAGS: tuple[str, ...] = ("--xla_cpu_collective_call_terminate_timeout_seconds=600",)
FORCE_DEVICES_FLAG = "xla_force_host_platform_device_count"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / sweep core shares
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_cpu_devices(
    batch_size: int, example_size: int, processes: int = 1, cap: int = MAX_AUTO_CPU_DEVICES
) -> int:
    """How many CPU devices to split each process's share of a global batch over.

    The most devices, up to `cap`, that divide the per-process batch evenly and leave each
    at least MIN_EXAMPLES_PER_DEVICE examples and MIN_INPUT_PER_DEVICE input values
    (`example_size` values per example); 1 when no split does.
    """
    per_process = max(batch_size // max(processes, 1), 1)
    best = 1
    for n in range(2, cap + 1):
        share = per_process // n
        if (
            per_process % n == 0
            and share >= MIN_EXAMPLES_PER_DEVICE
            and share * example_size >= MIN_INPUT_PER_DEVICE
        ):
            best = n
    return best


def attention_cpu_devices(batch_size: int, processes: int = 1, cores: int | None = None) -> int:
    """CPU devices for a model that attends: the most, up to the usable cores, that divide the
    per-process batch and leave each >= MIN_SEQUENCES_PER_DEVICE sequences; 1 when none do."""
    per_process = max(batch_size // max(processes, 1), 1)
    cores = usable_cores() if cores is None else cores
    best = 1
    for n in range(2, min(cores, MAX_AUTO_CPU_DEVICES) + 1):
        if per_process % n == 0 and per_process // n >= MIN_SEQUENCES_PER_DEVICE:
            best = n
    return best


def model_kind(model: Any, example: Any) -> str:
    """ "conv" when `model.init` on one batch like `example` runs a convolution, "attention"
    when it runs a batched matmul (a dot_general with batch dimensions: attention scores),
    else "other".

    Traced abstractly (`jax.make_jaxpr` on shapes): JAX's backend is not started, so this can
    run before the CPU device count is set. "other" when the model cannot be traced that way.
    """
    import jax
    import numpy as np

    key = jax.ShapeDtypeStruct((2,), np.uint32)
    x = jax.ShapeDtypeStruct(tuple(example.shape), example.dtype)
    try:
        jaxpr = jax.make_jaxpr(model.init)(key, x).jaxpr
    except Exception:  # a heuristic: any failure means "don't split"
        return "other"
    eqns = list(_equations(jaxpr))
    if any(e.primitive.name == "conv_general_dilated" for e in eqns):
        return "conv"
    for e in eqns:
        if e.primitive.name == "dot_general" and e.params["dimension_numbers"][1][0]:
            return "attention"
    return "other"


def model_convolves(model: Any, example: Any) -> bool:
    """Whether `model.init` on one batch like `example` runs a convolution."""
    return model_kind(model, example) == "conv"


def _equations(jaxpr: Any) -> Any:
    """Every equation of a jaxpr and of every jaxpr nested in it (jit, scan, cond...)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else (value,):
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def cpu_device_count(
    parallel: Any,
    batch_size: int | None = None,
    example_shape: tuple[int, ...] | None = None,
    convolves: bool | str | Callable[[], bool | str] = False,
    processes: int = 1,
    xla_flags: str | None = None,
) -> int | None:
    """How many CPU devices to create, or None to leave JAX's default (one).

    `parallel.cpu_devices` is an integer, or `auto`: one device for `single`; for a model that
    convolves (`convolves`: True or "conv") `auto_cpu_devices` of the global batch and one
    example's shape; for one that attends ("attention") `attention_cpu_devices`; else one
    (one device when the sizes are not given; `convolves` may be a function returning any of
    these, called only then: tracing the model costs ~0.2 s of every start); never fewer than
    `parallel.devices` asks to use. `--xla_force_host_platform_device_count` in XLA_FLAGS
    (`xla_flags`, default: the environment's) wins over all of it.
    """
    flags = os.environ.get("XLA_FLAGS", "") if xla_flags is None else xla_flags
    if FORCE_DEVICES_FLAG in flags:
        return None  # the user chose explicitly
    want = parallel.get("cpu_devices", "auto")
    if want in (None, "auto"):
        if parallel.get("name") == "single":
            return None
        n = 1
        if batch_size is not None and example_shape is not None:
            kind = convolves() if callable(convolves) else convolves
            if kind is True or kind == "conv":
                n = auto_cpu_devices(batch_size, math.prod(example_shape), processes)
            elif kind == "attention":
                n = attention_cpu_devices(batch_size, processes)
        asked = parallel.get("devices")
        if isinstance(asked, int) and asked > n:
            n = asked
        return n if n > 1 else None
    if isinstance(want, bool) or not isinstance(want, int) or want < 1:
        raise UserError(
            f"parallel.cpu_devices must be 'auto' or a positive integer, got {want!r}",
            hint="e.g. parallel.cpu_devices=2 (fake CPU devices), or parallel.cpu_devices=auto",
        )
    return want


def _flag_name(token: str) -> str:
    return token.lstrip("-").split("=", 1)[0]


def merge_xla_flags(
    env: str, config: str | None, defaults: tuple[str, ...] = DEFAULT_XLA_FLAGS
) -> str:
    """XLA_FLAGS for this run: dlx's defaults, then `parallel.xla_flags`, then the environment's;
    a flag named in a later source replaces the same flag from an earlier one."""
    chosen: dict[str, str] = {}
    for source in (" ".join(defaults), config or "", env):
        for token in source.split():
            chosen.pop(_flag_name(token), None)  # re-insert: keeps each source's order
            chosen[_flag_name(token)] = token
    return " ".join(chosen.values())


def configure_runtime(
    parallel: Any,
    dist: Any,
    batch_size: int | None = None,
    model: Any = None,
    example: Any = None,
) -> None:
    """Start the distributed runtime (multi-host), set XLA's flags and size the CPU platform.

    `batch_size` (global), `model` and `example` (an array shaped like one input batch,
    e.g. `x_train[:1]`) let `parallel.cpu_devices: auto` split the batch over CPU devices;
    without them it keeps one device.
    """
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return  # e.g. a second run in one process (tests): keep the devices and flags it has
    flags = merge_xla_flags(os.environ.get("XLA_FLAGS", ""), parallel.get("xla_flags"))
    if flags != os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = flags  # read by XLA when the backend starts, not at import
    shape = tuple(example.shape[1:]) if example is not None else None

    def convolves() -> str:
        return "other" if model is None or example is None else model_kind(model, example)

    processes = int(dist.get("num_processes") or 1)
    n_cpu = cpu_device_count(parallel, batch_size, shape, convolves, processes, flags)
    if n_cpu is not None:
        jax.config.update("jax_num_cpu_devices", n_cpu)
    if dist.get("coordinator") or dist.get("initialize"):
        try:
            jax.distributed.initialize(
                coordinator_address=dist.get("coordinator"),
                num_processes=dist.get("num_processes"),
                process_id=dist.get("process_id"),
                initialization_timeout=int(dist.get("timeout", 300)),
            )
        except (ValueError, RuntimeError) as err:
            raise UserError(
                f"could not start JAX's distributed runtime: {err}",
                hint="check dist.coordinator (host:port reachable from every "
                "process), dist.num_processes and dist.process_id",
            ) from err


def enable_compile_cache() -> None:
    """JAX's persistent compilation cache: a relaunch of the same recipe skips XLA compiles."""
    import jax

    from dlx.config.paths import cache_root

    jax.config.update("jax_compilation_cache_dir", str(cache_root() / "jax"))
    # Every compile, however short: the many sub-second ones (init, placement, eval, the
    # optimizer's) add up to half a cold start (benchmarks/compile_cache.py: warm/cold 0.55
    # at a 0.5 s threshold, 0.46 at 0). Entries are small (~70 for a recipe, a few MB); no
    # size limit: JAX's LRU eviction cannot read a cache written without it (every write
    # then fails), and deleting the folder is always safe.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

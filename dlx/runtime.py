"""JAX runtime set-up that must happen before any other JAX call: the multi-host
distributed runtime and the number of CPU devices."""

from __future__ import annotations

import os
from typing import Any

from dlx.errors import UserError


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))  # respects taskset / sweep core shares
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_device_count(parallel: Any) -> int | None:
    """How many CPU devices to create, or None to leave JAX's default.

    XLA:CPU runs one device's ops on a shared thread pool; splitting the global batch over
    one fake device per core measured faster here (see README "Scaling out"), so `auto`
    makes one device per usable core for the data-parallel strategies. `single` uses one.
    """
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None  # the user chose explicitly
    want = parallel.get("cpu_devices", "auto")
    if want in (None, "auto"):
        return None if parallel.get("name") == "single" else usable_cores()
    if not isinstance(want, int) or want < 1:
        raise UserError(f"parallel.cpu_devices must be 'auto' or a positive integer, got {want!r}")
    return want


def configure_runtime(parallel: Any, dist: Any) -> None:
    """Start the distributed runtime (multi-host) and size the CPU platform."""
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return  # e.g. a second run in one process (tests): keep the devices it has
    n_cpu = cpu_device_count(parallel)
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

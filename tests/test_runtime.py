"""dlx.runtime's decisions: CPU device count and XLA flags (pure functions; nothing timed)."""

from __future__ import annotations

import pytest

from dlx.errors import UserError
from dlx.runtime import (
    MAX_AUTO_CPU_DEVICES,
    auto_cpu_devices,
    cpu_device_count,
    merge_xla_flags,
    model_convolves,
)

MNIST = (28, 28, 1)
DIGITS = (8, 8, 1)


@pytest.mark.parametrize(
    ("batch", "shape", "processes", "expected"),
    [
        (128, MNIST, 1, 4),  # recipe cnn: 32 images per device
        (256, MNIST, 1, MAX_AUTO_CPU_DEVICES),  # capped
        (32, MNIST, 1, 1),  # recipe cnn_small: too few examples to split
        (100, MNIST, 1, 2),  # the most devices that divide the batch and keep >= 32 each
        (64, MNIST, 1, 2),
        (96, MNIST, 1, 3),
        (67, MNIST, 1, 1),  # prime: no even split
        (63, MNIST, 1, 1),  # less than two devices' worth
        (64, DIGITS, 1, 1),  # recipe digits: too little input to split
        (128, (40,), 1, 1),  # MNIST-1D: 40 values an example
        (128, MNIST, 2, 2),  # two processes: 64 examples each
        (4096, DIGITS, 1, 8),  # many small examples add up
        (128, (64, 64, 3), 1, 4),  # large images: still >= 32 examples per device
    ],
)
def test_auto_cpu_devices(batch: int, shape: tuple, processes: int, expected: int) -> None:
    import math

    assert auto_cpu_devices(batch, math.prod(shape), processes) == expected


def parallel(name: str = "auto", cpu_devices: object = "auto", devices: int | None = None) -> dict:
    return {"name": name, "devices": devices, "cpu_devices": cpu_devices}


def test_cpu_device_count_auto_splits_convolutions() -> None:
    conv = {"convolves": True, "xla_flags": ""}
    assert cpu_device_count(parallel(), 128, MNIST, **conv) == 4
    assert cpu_device_count(parallel("sharded"), 256, MNIST, **conv) == 8
    assert cpu_device_count(parallel("pmap"), 128, MNIST, processes=2, **conv) == 2


def test_cpu_device_count_traces_the_model_only_when_it_decides() -> None:
    traced: list[int] = []

    def convolves() -> bool:
        traced.append(1)
        return True

    assert cpu_device_count(parallel("single"), 128, MNIST, convolves, xla_flags="") is None
    assert cpu_device_count(parallel(cpu_devices=2), 128, MNIST, convolves, xla_flags="") == 2
    assert not traced  # `single` and an explicit count never need the model's trace
    assert cpu_device_count(parallel(), 128, MNIST, convolves, xla_flags="") == 4
    assert traced == [1]


def test_cpu_device_count_one_device_is_jax_default() -> None:
    conv = {"convolves": True, "xla_flags": ""}
    assert cpu_device_count(parallel(), 128, MNIST, convolves=False, xla_flags="") is None
    assert cpu_device_count(parallel(), 64, DIGITS, **conv) is None
    assert cpu_device_count(parallel("single"), 128, MNIST, **conv) is None
    assert cpu_device_count(parallel(), **conv) is None  # sizes unknown: stay on one


def test_cpu_device_count_honours_parallel_devices() -> None:
    assert cpu_device_count(parallel(devices=4), 128, MNIST, xla_flags="") == 4
    assert cpu_device_count(parallel(devices=2), 128, MNIST, True, xla_flags="") == 4
    assert cpu_device_count(parallel(devices=6), 128, MNIST, True, xla_flags="") == 6


def test_cpu_device_count_explicit() -> None:
    assert cpu_device_count(parallel(cpu_devices=3), 128, MNIST, xla_flags="") == 3
    assert cpu_device_count(parallel("single", cpu_devices=2), xla_flags="") == 2
    for bad in (0, -1, "four", 2.5, True):
        with pytest.raises(UserError, match="cpu_devices"):
            cpu_device_count(parallel(cpu_devices=bad), xla_flags="")


def test_user_device_count_flag_wins() -> None:
    flags = "--xla_force_host_platform_device_count=3"
    assert cpu_device_count(parallel(), 128, MNIST, True, xla_flags=flags) is None
    assert cpu_device_count(parallel(cpu_devices=5), xla_flags=flags) is None


def test_cpu_device_count_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
    assert cpu_device_count(parallel(), 128, MNIST, True) is None
    monkeypatch.setenv("XLA_FLAGS", "")
    assert cpu_device_count(parallel(), 128, MNIST, True) == 4


def test_merge_xla_flags_precedence() -> None:
    defaults = ("--xla_a=1", "--xla_b=1")
    assert merge_xla_flags("", None, defaults) == "--xla_a=1 --xla_b=1"
    assert merge_xla_flags("", "--xla_b=2 --xla_c", defaults) == "--xla_a=1 --xla_b=2 --xla_c"
    # The environment's XLA_FLAGS wins over the config and dlx's defaults.
    merged = merge_xla_flags("--xla_b=3 --xla_a=0", "--xla_b=2", defaults)
    assert merged.split() == ["--xla_b=3", "--xla_a=0"]
    assert merge_xla_flags("--xla_x=1", None, ()) == "--xla_x=1"  # user's flags kept as given
    assert merge_xla_flags("", "", ()) == ""


@pytest.mark.parametrize(
    ("model", "shape", "expected"),
    [
        ({"name": "cnn"}, MNIST, True),
        ({"name": "cnn_small"}, MNIST, True),
        ({"name": "cnn", "features": [], "dense": 400}, MNIST, False),  # an MLP
    ],
)
def test_model_convolves(model: dict, shape: tuple, expected: bool) -> None:
    import numpy as np

    from dlx.models import build_model

    example = np.zeros((1, *shape), np.float32)
    assert model_convolves(build_model(model, 10), example) is expected


def test_model_convolves_looks_inside_nested_jaxprs() -> None:
    import jax
    import numpy as np

    class ConvInScan:
        def init(self, key: object, x: jax.Array) -> jax.Array:
            w = jax.numpy.ones((3, 3, 1, 4))

            def body(carry: jax.Array, _: None) -> tuple[jax.Array, None]:
                y = jax.lax.conv_general_dilated(
                    carry, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
                return carry + y.sum(), None

            return jax.jit(lambda c: jax.lax.scan(body, c, None, length=2)[0])(x)

    assert model_convolves(ConvInScan(), np.zeros((1, 8, 8, 1), np.float32)) is True


def test_model_convolves_is_false_when_untraceable() -> None:
    import numpy as np

    class Broken:
        def init(self, *args: object) -> None:
            raise TypeError("not a flax module")

    assert model_convolves(Broken(), np.zeros((1, 4), np.float32)) is False


def test_model_convolves_leaves_jax_unstarted() -> None:
    """Tracing must not start JAX's backend: the device count is set after it."""
    import subprocess
    import sys

    code = (
        "import numpy as np; from jax._src import xla_bridge; from dlx.models import "
        "build_model; from dlx.runtime import model_convolves; "
        "m = build_model({'name': 'cnn'}, 10); "
        "assert model_convolves(m, np.zeros((1, 28, 28, 1), np.float32)); "
        "assert not xla_bridge.backends_are_initialized(); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "ok", out.stderr


def test_configure_runtime_leaves_started_backend_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """In a process whose JAX already runs (the test process), configure_runtime is a no-op."""
    import jax

    from dlx.runtime import configure_runtime

    jax.devices()  # make sure the backend is up
    monkeypatch.setenv("XLA_FLAGS", "--xla_b=1")
    configure_runtime(parallel(cpu_devices=3), {}, 128)
    import os

    assert os.environ["XLA_FLAGS"] == "--xla_b=1"


@pytest.mark.parametrize(
    ("model", "example", "expected"),
    [
        ({"name": "cnn"}, ((1, 28, 28, 1), "float32"), "conv"),
        ({"name": "transformer_lm", "d_model": 32, "layers": 1}, ((1, 16), "int32"), "attention"),
        (
            {"name": "transformer_cls", "d_model": 32, "layers": 1},
            ((1, 40, 1), "float32"),
            "attention",
        ),
        ({"name": "rnn", "hidden": 16}, ((1, 40, 1), "float32"), "other"),  # a scan, no batch dims
        ({"name": "mlp"}, ((1, 784), "float32"), "other"),
    ],
)
def test_model_kind(model: dict, example: tuple, expected: str) -> None:
    import numpy as np

    from dlx.models import build_model
    from dlx.runtime import model_kind

    shape, dtype = example
    built = build_model(model, 10, tuple(shape[1:]))
    assert model_kind(built, np.zeros(shape, dtype)) == expected


def test_attention_models_split_over_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import dlx.runtime
    from dlx.runtime import attention_cpu_devices

    assert attention_cpu_devices(32, cores=2) == 2  # recipe transformer: 16 sequences each
    assert attention_cpu_devices(32, cores=8) == 4  # >= 8 sequences per device
    assert attention_cpu_devices(12, cores=2) == 1  # 6 each: too few to split
    assert attention_cpu_devices(33, cores=2) == 1  # no even split
    assert attention_cpu_devices(64, processes=2, cores=2) == 2
    assert attention_cpu_devices(128, cores=1) == 1  # one core: nothing to gain
    monkeypatch.setattr(dlx.runtime, "usable_cores", lambda: 2)
    assert cpu_device_count(parallel(), 32, (128,), "attention", xla_flags="") == 2
    assert cpu_device_count(parallel(), 32, (128,), "other", xla_flags="") is None
    assert cpu_device_count(parallel("single"), 32, (128,), "attention", xla_flags="") is None


def test_the_collective_timeout_is_a_default_flag_the_user_can_override() -> None:
    flag = "--xla_cpu_collective_call_terminate_timeout_seconds"
    assert merge_xla_flags("", None).split() == [f"{flag}=600"]
    assert merge_xla_flags(f"{flag}=30", None).split() == [f"{flag}=30"]

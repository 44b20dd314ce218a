"""The Python side of benchmarks/gpu.sh: every recipe's train step on one accelerator at
fp32 and bf16 (samples/s, step time, share of the chip's peak FLOP/s), and the largest
`parallel=fsdp` transformer that fits its memory.

- FLOPs per step: XLA's own count, `cost_analysis()["flops"]` of the compiled step.
- Peak FLOP/s: measured here with a large matmul at each precision (what the chip does
  through XLA), and quoted from the vendor's datasheet (`SPEC_TFLOPS`) where the device kind
  is known. An fp32 matmul well above the datasheet's FP32 figure means XLA ran it on the
  TF32 tensor cores (JAX's default matmul precision on NVIDIA GPUs since Ampere); the fp32
  rows are then compared with the TF32 figure.
- Largest fsdp transformer: decoder LMs of growing width (12 layers) on the transformer
  recipe's data under parallel=fsdp and bf16 compute, each compiled from shapes alone and
  judged by XLA's memory analysis of its step against the device's allocator limit; the
  largest predicted to fit is then built and trained for real (one size smaller if that
  runs out of memory).

    benchmarks/gpu.sh [--recipes cnn,transformer] [--steps 20] [--no-largest]
    GPU_BENCH_CPU=1 benchmarks/gpu.sh     # 2 steps of digits on the CPU: tests this file

Prints a Markdown table and writes benchmarks/results/gpu.json (gpu_cpu_check.json on CPU).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

from dlx_side import ROOT, dlx_setup, run_steps, train_batch
from report import write_result

# Dense tensor-core / CUDA-core peak TFLOP/s (no structured sparsity), from NVIDIA's
# datasheets: H100 and H200 SXM (the H200 keeps the H100 SXM's compute, with more and faster
# HBM), H100 PCIe, A100 (SXM and PCIe), L4, A10. Matched in this order against
# `device_kind` (e.g. "NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB").
SPEC_TFLOPS = (
    ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0}),
    ("H200", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    ("H100", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
    ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0}),
    ("L4", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0}),
    ("A10", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0}),
)
PRECISIONS = ("fp32", "bf16")
CPU_CHECK = os.environ.get("GPU_BENCH_CPU") == "1"


def recipes() -> list[str]:
    return sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))


def spec_peak(kind: str) -> dict[str, float] | None:
    for name, peaks in SPEC_TFLOPS:
        if name.lower() in kind.lower():
            return peaks
    return None


def matmul_peak(dtype: str, n: int, reps: int) -> float:
    """Measured TFLOP/s of an n x n x n matmul in `dtype` (float32 at JAX's default
    precision, as a model's fp32 layers get it), the median of `reps` timed calls."""
    import jax
    import jax.numpy as jnp

    dt = jnp.float32 if dtype == "fp32" else jnp.bfloat16
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dt)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), dt)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f(a, b).block_until_ready()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e12


def step_flops(strategy, task, state, batch) -> float | None:
    """XLA's FLOP count of one compiled train step (None where the backend gives none)."""
    import jax

    from dlx.training.parallel import train_step

    if strategy.name == "fsdp":
        jitted = strategy._fsdp
    elif strategy.name == "single":
        jitted = jax.jit(train_step, static_argnums=0)
    else:
        jitted = strategy._train
    cost = jitted.lower(task, state, batch).compile().cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per program
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def bench_recipe(recipe: str, precision: str, steps: int, extra: list[str]) -> dict:
    """One recipe at one precision on one device: compile, warm up, time `steps` steps."""
    setup = dlx_setup(
        recipe,
        ["schedule=constant", f"trainer.precision={precision}", "parallel=single", *extra],
    )
    import jax

    from dlx.data import epoch_batches

    strat, batch_size = setup.strategy, int(setup.cfg.data.batch_size)
    order = list(epoch_batches(len(setup.data.x_train), batch_size, seed=0, epoch=0))
    state = strat.place(setup.init_state())
    first = strat.batch(train_batch(setup, order[0]))
    flops = step_flops(strat, setup.task, state, first)
    warm = [strat.batch(train_batch(setup, order[i % len(order)])) for i in range(3)]
    state = run_steps(setup, state, warm)  # compile + warm up
    batches = [strat.batch(train_batch(setup, order[i % len(order)])) for i in range(steps)]
    jax.block_until_ready(batches)  # on the device before the clock starts: step time only
    t = time.perf_counter()
    run_steps(setup, state, batches)
    elapsed = time.perf_counter() - t
    params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    return {
        "recipe": recipe,
        "precision": precision,
        "task": setup.task.name,
        "params": int(params),
        "batch": batch_size,
        "step_ms": 1000 * elapsed / steps,
        "samples_per_s": steps * batch_size / elapsed,
        "flops_per_step": flops,
        "tflops": flops * steps / elapsed / 1e12 if flops else None,
    }


def _abstract(strategy, shapes):
    """`shapes` (a state of ShapeDtypeStructs) carrying the strategy's layout."""
    import jax

    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
        shapes,
        strategy.shardings(shapes),
    )


def largest_fsdp(widths: list[int], layers: int, extra: list[str], limit: int, steps: int) -> dict:
    """The widest transformer LM (`layers` deep) whose fsdp step XLA predicts to fit in
    `limit` bytes per device, confirmed by training it `steps` steps."""
    import jax

    from dlx.data import epoch_batches

    tried = []

    def build(d: int):
        heads = max(1, d // 128)
        over = [
            f"model.d_model={d}",
            f"model.layers={layers}",
            f"model.heads={heads}",
            "parallel=fsdp",
            "trainer.precision=bf16",
            "schedule=constant",
            *extra,
        ]
        return dlx_setup("transformer", over)

    for d in widths:
        setup = build(d)
        strat = setup.strategy
        shapes = setup.template_state()
        order = list(
            epoch_batches(len(setup.data.x_train), int(setup.cfg.data.batch_size), seed=0, epoch=0)
        )
        batch = strat.batch(train_batch(setup, order[0]))
        t = time.perf_counter()
        mem = strat._fsdp.lower(setup.task, _abstract(strat, shapes), batch).compile()
        mem = mem.memory_analysis()
        row = {
            "d_model": d,
            "layers": layers,
            "params": int(sum(x.size for x in jax.tree_util.tree_leaves(shapes.params))),
            "compile_s": time.perf_counter() - t,
        }
        if mem is not None:
            row["peak_bytes"] = int(
                mem.argument_size_in_bytes
                + mem.output_size_in_bytes
                + mem.temp_size_in_bytes
                - mem.alias_size_in_bytes
            )
        row["fits"] = row.get("peak_bytes", 0) <= limit
        tried.append(row)
        print(f"  fsdp d_model={d}: {row}", file=sys.stderr)
        if not row["fits"]:
            break
    fitting = [r for r in tried if r["fits"]]
    result: dict = {"limit_bytes": limit, "devices": jax.device_count(), "tried": tried}
    for row in reversed(fitting):  # confirm by running; one size down on out-of-memory
        state = None
        try:
            setup = build(row["d_model"])
            strat = setup.strategy
            shardings = strat.shardings(setup.template_state())
            example = setup.example()
            # Initialised straight into the sharded layout: never whole on one device.
            init = jax.jit(
                lambda rng, ex, s=setup: s.task.init(rng, ex, s.tx), out_shardings=shardings
            )
            state = init(jax.random.PRNGKey(0), example)
            bs = int(setup.cfg.data.batch_size)
            order = list(epoch_batches(len(setup.data.x_train), bs, seed=0, epoch=0))
            batches = [
                strat.batch(train_batch(setup, order[i % len(order)])) for i in range(steps + 1)
            ]
            state = run_steps(setup, state, batches[:1])
            t = time.perf_counter()
            run_steps(setup, state, batches[1:])
            row["step_ms"] = 1000 * (time.perf_counter() - t) / steps
            row["tokens_per_s"] = bs * int(setup.cfg.data.seq_len) / (row["step_ms"] / 1000)
            stats = jax.devices()[0].memory_stats() or {}
            row["peak_in_use_bytes"] = stats.get("peak_bytes_in_use")
            result["largest"] = row
            break
        except Exception as err:  # XlaRuntimeError RESOURCE_EXHAUSTED: one size down
            row["error"] = str(err).splitlines()[0][:200]
            del state  # free the failed size's buffers before the next try
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--recipes", default=None, help="comma-separated (default: every recipe)")
    ap.add_argument("--steps", type=int, default=2 if CPU_CHECK else 30)
    ap.add_argument("--no-largest", action="store_true", help="skip the largest-fsdp search")
    ap.add_argument("--layers", type=int, default=1 if CPU_CHECK else 12)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import jax

    dev = jax.devices()[0]
    kind = dev.device_kind
    names = args.recipes.split(",") if args.recipes else (["digits"] if CPU_CHECK else recipes())
    # The recipe's own data; on the CPU check, little of it (2 steps need 2 batches).
    extra = ["data.limit_eval=8"] if CPU_CHECK else []
    n = 256 if CPU_CHECK else 8192
    measured = {p: matmul_peak(p, n, 3 if CPU_CHECK else 20) for p in PRECISIONS}
    spec = spec_peak(kind)
    uses_tf32 = bool(spec) and measured["fp32"] > 1.2 * spec["fp32"]
    rows, errors = [], {}
    for recipe in names:
        for precision in PRECISIONS:
            try:
                rows.append(bench_recipe(recipe, precision, args.steps, extra))
            except Exception as err:  # a recipe whose data is not here: say so, go on
                errors[f"{recipe}/{precision}"] = f"{type(err).__name__}: {str(err)[:300]}"
                traceback.print_exc(file=sys.stderr)
            print(f"  {recipe} {precision} done", file=sys.stderr)
    for r in rows:
        peak = measured[r["precision"]]
        r["share_of_measured_peak"] = r["tflops"] / peak if r["tflops"] else None
        if spec:
            key = "tf32" if r["precision"] == "fp32" and uses_tf32 else r["precision"]
            r["share_of_spec_peak"] = r["tflops"] / spec[key] if r["tflops"] else None
    largest = None
    if not args.no_largest:
        stats = dev.memory_stats() or {}
        limit = stats.get("bytes_limit") or (256 * 2**20 if CPU_CHECK else None)
        widths = [64] if CPU_CHECK else [1024, 2048, 3072, 4096, 5120, 6144, 7168, 8192]
        if limit:
            largest = largest_fsdp(
                widths, args.layers, extra, int(limit * 0.95), max(args.steps, 2)
            )
    print_table(kind, measured, spec, uses_tf32, rows, errors, largest)
    out = args.out or str(
        Path(__file__).parent / "results" / ("gpu_cpu_check.json" if CPU_CHECK else "gpu.json")
    )
    write_result(
        out,
        {
            "benchmark": "gpu",
            "device_kind": kind,
            "backend": jax.default_backend(),
            "devices": jax.device_count(),
            "steps": args.steps,
            "matmul_tflops": measured,
            "spec_tflops": spec,
            "fp32_on_tf32": uses_tf32,
            "rows": rows,
            "errors": errors,
            "largest_fsdp": largest,
        },
    )


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.1f} M"


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if x is not None else "-"


def print_table(kind, measured, spec, uses_tf32, rows, errors, largest) -> None:
    print(
        f"\n{kind}: measured matmul peak fp32 {measured['fp32']:.1f} TFLOP/s, "
        f"bf16 {measured['bf16']:.1f} TFLOP/s"
        + (
            f"; datasheet fp32 {spec['fp32']}, tf32 {spec['tf32']}, bf16 {spec['bf16']}"
            + (" (fp32 matmuls ran on TF32)" if uses_tf32 else "")
            if spec
            else "; no datasheet entry for this device"
        )
    )
    print(
        "\n| recipe | precision | params | batch | step (ms) | samples/s | TFLOP/s "
        "| % of measured peak | % of datasheet |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        tf = f"{r['tflops']:.2f}" if r["tflops"] else "-"
        print(
            f"| {r['recipe']} | {r['precision']} | {r['params']:,} | {r['batch']} | "
            f"{r['step_ms']:.2f} | {r['samples_per_s']:,.0f} | {tf} | "
            f"{_pct(r['share_of_measured_peak'])} | {_pct(r.get('share_of_spec_peak'))} |"
        )
    for what, err in errors.items():
        print(f"| {what} | not run: {err.splitlines()[0][:120]} |")
    if largest is not None:
        big = largest.get("largest")
        if big:
            print(
                f"\nlargest parallel=fsdp transformer that fits ({largest['devices']} device(s), "
                f"bf16 compute, fp32 params + AdamW): d_model {big['d_model']} x "
                f"{big['layers']} layers, {_count(big['params'])} parameters, "
                f"XLA-predicted peak {big.get('peak_bytes', 0) / 2**30:.1f} GiB of "
                f"{largest['limit_bytes'] / 2**30:.1f} GiB; {big['step_ms']:.0f} ms/step, "
                f"{big['tokens_per_s']:,.0f} tokens/s"
            )
        else:
            print("\nno fsdp transformer size could be confirmed: " + str(largest["tried"])[:500])


if __name__ == "__main__":
    main()

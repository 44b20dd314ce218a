"""The `dlx` command line (Typer). No ML code here and no jax import at module load:
`dlx --help` must answer instantly; each command imports what it needs when it runs."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

app = typer.Typer(
    name="dlx",
    help="Deep-learning experiments on JAX: compose a recipe with Hydra overrides, train, "
    "evaluate, sweep. Every KEY=VALUE is a Hydra override (+key=, ~key, choice(...)).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="Hydra overrides: recipe=NAME, group=option, key=value.", show_default=False
    ),
]
ConfigDir = Annotated[
    Path | None,
    typer.Option(
        "--config-dir",
        help="Extra folder searched first for recipes "
        "(DIR/recipes/*.yaml or DIR/*.yaml) and config groups (DIR/data/*.yaml, ...).",
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]

T = TypeVar("T")


def _guard(debug: bool, fn: Callable[[], T]) -> T:
    """User errors: one message, exit 2, no traceback (unless --debug)."""
    from dlx.errors import UserError

    try:
        return fn()
    except UserError as err:
        if debug:
            raise
        from rich.console import Console
        from rich.markup import escape

        con = Console(stderr=True, highlight=False)
        # escape: messages quote overrides such as data.drop=[city], which rich would
        # otherwise take for markup tags and drop
        con.print(f"[bold red]error:[/] {escape(str(err))}", markup=True)
        if err.hint:
            con.print(f"[yellow]fix:[/] {escape(err.hint)}", markup=True)
        global _hard_exit
        _hard_exit = getattr(err, "hard_exit", False)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        if debug:
            raise
        print("interrupted", file=sys.stderr)
        raise typer.Exit(130) from None


@app.command(
    epilog="""Examples:

  dlx train                                   # default recipe (cnn on MNIST)\n
  dlx train recipe=cnn optim.lr=3e-4 trainer.epochs=3\n
  dlx train recipe=digits trainer.max_steps=20 seed=1\n
  dlx train recipe=cnn optim=sgd schedule=cosine data.batch_size=256\n
  dlx train recipe=cnn data.path=/data/mnist outputs.dir=/scratch/runs\n
  dlx train resume=outputs/cnn/2026-11-30_12-00-00_ab12     # continue a preempted run\n
  dlx train recipe=cnn init_from=outputs/cnn/2026-11-30_12-00-00_ab12 optim.lr=1e-4

Exit codes: 0 finished, 2 bad input, 3 diverged, 128+N preempted by signal N (SIGTERM: 143;
a checkpoint is saved first, resume with resume=<run dir>)."""
)
def train(overrides: Overrides = None, config_dir: ConfigDir = None, debug: Debug = False) -> None:
    """Train a recipe; writes everything to outputs/<recipe>/<time>_<id>/."""
    overrides = overrides or []

    def go() -> int:
        from dlx.commands.train import train_command

        return train_command(overrides, config_dir)

    code = _guard(debug, go)
    if code:
        raise typer.Exit(code)


@app.command(
    epilog="""Examples:

  dlx sweep recipe=digits optim.lr=1e-3,3e-3 model.dense=32,64    # grid: 4 trials\n
  dlx sweep recipe=digits 'optim.lr=tag(log, interval(1e-4,1e-2))' sweep.trials=20 -j 2\n
  dlx sweep recipe=digits 'optim.lr=choice(1e-3,3e-3)' sweep=random sweep.trials=4 --dry-run\n
  dlx sweep recipe=cnn optim.lr=1e-4,1e-3 sweep.storage=sqlite:////shared/cnn.db  # each host\n
  Rerun the same command to resume: finished trials are kept, interrupted ones run again."""
)
def sweep(
    overrides: Overrides = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=1, help="Trials run at once here, each on its share of the cores."
        ),
    ] = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the trials it would run; run nothing.")
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="Folder under outputs/sweeps/ (default: recipe, type and a hash of the search).",
        ),
    ] = None,
    config_dir: ConfigDir = None,
    debug: Debug = False,
) -> None:
    """Hyperparameter search (grid, random, Optuna TPE): one `dlx train` per trial, in
    outputs/sweeps/<name>/; resumable, parallel (--jobs), shared by workers on one storage."""

    def go() -> None:
        from dlx.sweep import run_sweep

        run_sweep(overrides or [], config_dir=config_dir, jobs=jobs, dry_run=dry_run, name=name)

    _guard(debug, go)


@app.command(
    epilog="""Examples:

  dlx show                                   # the default recipe's full config\n
  dlx show recipe=digits optim=sgd optim.lr=0.1"""
)
def show(overrides: Overrides = None, config_dir: ConfigDir = None, debug: Debug = False) -> None:
    """Print the composed config (YAML) and exit; nothing is run."""

    def go() -> None:
        from omegaconf import OmegaConf

        from dlx.config import compose

        typer.echo(OmegaConf.to_yaml(compose(overrides or [], config_dir)), nl=False)

    _guard(debug, go)


@app.command(
    name="eval",
    epilog="""Examples:

  dlx eval outputs/digits/2026-11-30_12-00-00_ab12          # best checkpoint, test split\n
  dlx eval outputs/digits/2026-11-30_12-00-00_ab12 --latest --split val\n
  dlx eval outputs/digits/2026-11-30_12-00-00_ab12 --step 200\n
  dlx eval outputs/cnn/2026-11-30_12-00-00_ab12 data.path=/data/other_mnist data.limit_eval=100\n
  Writes eval_<split>_<step>.json (and _confusion.png) in the run dir; never overwrites.""",
)
def eval_(
    path: Annotated[
        str,
        typer.Argument(
            help="A run dir (outputs/<recipe>/<time>_<id>), its checkpoints/ dir or one "
            "checkpoint inside it.",
            show_default=False,
        ),
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value changes to the run's saved config (data.path=..., "
            "data.limit_eval=N, data.eval_batch_size=N).",
            show_default=False,
        ),
    ] = None,
    split: Annotated[
        str, typer.Option("--split", help="Which split to evaluate: test | val | train.")
    ] = "test",
    latest: Annotated[
        bool, typer.Option("--latest", help="The most recent checkpoint instead of the best.")
    ] = False,
    step: Annotated[
        int | None, typer.Option("--step", help="The checkpoint saved at this step.")
    ] = None,
    debug: Debug = False,
) -> None:
    """Evaluate a run's best checkpoint (or --latest, --step N) on test (or --split).

    Uses the run's saved config (overrides allowed). Loss and accuracy; classifiers add
    per-class precision/recall/F1 and a confusion matrix PNG, language models bits per
    character and perplexity. Writes eval_<split>_<step>.json in the run dir."""

    def go() -> None:
        from dlx.commands.eval import print_result, run_eval

        print_result(run_eval(path, overrides or [], split=split, latest=latest, step=step))

    _guard(debug, go)


@app.command(
    epilog="""Examples:

  dlx runs                                   # every run under ./outputs, oldest first\n
  dlx runs --recipe digits\n
  dlx runs --root /scratch/runs --sweeps     # outputs.dir=/scratch/runs; sweep trials too\n
  dlx runs --json | jq '.[] | select(.status == "failed") | .run_dir'""",
)
def runs(
    recipe: Annotated[
        str | None, typer.Option("--recipe", help="Only runs of this recipe.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON list instead of a table.")
    ] = False,
    root: Annotated[
        Path,
        typer.Option("--root", help="The outputs folder (the outputs.dir the runs used)."),
    ] = Path("outputs"),
    sweeps: Annotated[
        bool, typer.Option("--sweeps", help="Include sweep trials (outputs/sweeps/*/trials/).")
    ] = False,
    debug: Debug = False,
) -> None:
    """List runs under outputs/: status, best metric, steps, duration, start, run dir.

    Read from each run's summary.json. Status: running, finished, diverged, preempted,
    failed (also a "running" run whose process is gone), unknown (no summary), corrupt."""

    def go() -> None:
        import json

        from dlx.commands.runs import list_runs, print_runs

        rows = list_runs(root, recipe=recipe, sweeps=sweeps)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            print_runs(rows, root)

    _guard(debug, go)


@app.command(
    epilog="""Examples:

  dlx recipes\n
  dlx recipes --config-dir ./my_configs"""
)
def recipes(config_dir: ConfigDir = None) -> None:
    """List the recipes (yours in ./recipes or --config-dir first), one line each."""
    from rich.console import Console
    from rich.table import Table

    from dlx.config import find_recipes, recipe_description
    from dlx.config.paths import packaged_dir

    shipped = packaged_dir("recipes").resolve()
    table = Table()
    for col in ("recipe", "description", "from"):
        table.add_column(col)
    for name, path in find_recipes(config_dir).items():
        where = "dlx" if path.parent.resolve() == shipped else str(path.parent)
        table.add_row(name, recipe_description(path), where)
    con = Console(highlight=False)
    con.print(table)
    from dlx.config.targets import entry_points

    for section, label, builtin in (
        ("model", "models (model=NAME)", _builtin_models),
        ("data", "datasets (data=NAME)", _builtin_datasets),
    ):
        plugins = [f"{n} ({ep.value})" for n, ep in sorted(entry_points(section).items())]
        con.print(f"{label}: {', '.join([*builtin(), *plugins])}", markup=False, soft_wrap=True)
    con.print(
        "your own: model._target_=mynets.Net, data._target_=mydata.load (modules in the launch "
        "folder), or a package's `dlx.models` / `dlx.datasets` entry points",
        markup=False,
        soft_wrap=True,
    )


def _builtin_models() -> list[str]:
    from dlx.models import model_names

    return model_names()


def _builtin_datasets() -> list[str]:
    from dlx.config.compose import group_options

    return group_options("data")


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    epilog="""Examples:

  dlx launch --nproc 2 -- train recipe=digits parallel.cpu_devices=2\n
  dlx launch --nproc 4 -- train recipe=cnn data.batch_size=256

On a cluster, start one `dlx train ... dist.coordinator=HOST:PORT dist.num_processes=N
dist.process_id=I` per host instead (or dist.initialize=true under SLURM); see README.""",
)
def launch(
    ctx: typer.Context,
    nproc: Annotated[int, typer.Option("--nproc", help="Processes to start on this machine.")] = 2,
    port: Annotated[
        int | None, typer.Option(help="Coordinator port (default: a free one).")
    ] = None,
    debug: Debug = False,
) -> None:
    """Run a multi-process (multi-host style) training on this machine via JAX's distributed
    runtime; only process 0 writes the run dir."""

    def go() -> int:
        from dlx.commands.launch import launch as run_launch

        return run_launch(nproc, list(ctx.args), port)

    code = _guard(debug, go)
    if code:
        raise typer.Exit(code)


@app.command(
    epilog="""Examples:

  dlx sample outputs/transformer/2026-11-30_12-00-00_ab12 --prompt "It is a truth"\n
  dlx sample RUN --tokens 500 --temperature 0.6 --top-k 20 --seed 3\n
  dlx sample RUN --temperature 0                    # greedy\n
  dlx sample outputs/gan/RUN --n 64 --out grid.png  # a GAN run: a PNG grid of samples"""
)
def sample(
    run: Annotated[
        Path, typer.Argument(help="A language-model run dir (recipe=transformer) or a GAN's.")
    ],
    prompt: Annotated[str, typer.Option(help="Text to continue.")] = "",
    tokens: Annotated[int, typer.Option(help="Characters to generate.")] = 200,
    temperature: Annotated[float, typer.Option(help="Softmax temperature; 0 = greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k likeliest.")] = 40,
    seed: Annotated[int, typer.Option(help="Sampling seed (a GAN's noise).")] = 0,
    n: Annotated[int, typer.Option("--n", help="GAN: images in the grid.")] = 64,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="GAN: the PNG to write (default <run dir>/samples.png)."),
    ] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Latest, not best, checkpoint.")] = False,
    debug: Debug = False,
) -> None:
    """Generate from a run: text from a character-level language model, a PNG grid of
    images from a GAN (prints its path)."""

    def go() -> None:
        from dlx.sample import is_gan, load, sample_images
        from dlx.sample import sample as run_sample

        loaded = load(run, "latest" if latest else "best")
        if is_gan(loaded):
            from dlx.io import output_file

            target = output_file(out, "--out") if out is not None else None
            typer.echo(str(sample_images(loaded, n, seed, target)))
            return
        text = run_sample(loaded, prompt, tokens, temperature, top_k, seed)
        typer.echo(text)

    _guard(debug, go)


@app.command(
    epilog="""Examples:

  dlx plot outputs/digits/2026-11-30_12-00-00_ab12 outputs/digits/2026-11-30_12-05-00_cd34\n
  dlx plot outputs/digits --metric val/accuracy --out digits.png   # every run in the folder\n
  dlx plot RUN1 RUN2 --metric train/loss --metric val/loss\n
  A run's own curves are drawn at the end of training: <run dir>/plots/*.png."""
)
def plot(
    run_dirs: Annotated[
        list[str],
        typer.Argument(
            help="Run dirs (outputs/<recipe>/<time>_<id>), or folders holding runs.",
            show_default=False,
        ),
    ],
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="A metric key from metrics.jsonl, e.g. val/accuracy; repeat for more panels "
            "(default: train/loss, val/loss, val/accuracy).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="The PNG to write.")] = Path("runs.png"),
    debug: Debug = False,
) -> None:
    """Overlay several runs' curves (one line per run, one panel per metric) in one PNG."""

    def go() -> None:
        from dlx.io import output_file
        from dlx.track.plots import plot_runs

        typer.echo(f"wrote {plot_runs(run_dirs, metric or [], output_file(out, '--out'))}")

    _guard(debug, go)


@app.command(
    epilog="""Examples:

  dlx report outputs/digits/2026-11-30_12-00-00_ab12     # -> ./report.html\n
  dlx report outputs/digits/RUN1 outputs/digits/RUN2 --out lr.html\n
  dlx report outputs/digits --out digits.html            # every run in it\n
  dlx report outputs/sweeps/digits-optuna-1a2b3c4d --out sweep.html\n
  One HTML file, no network needed: data, images and the chart library are inside it."""
)
def report(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="A run dir, several run dirs or folders of runs, or one sweep dir "
            "(outputs/sweeps/<name>).",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The HTML file to write (replaced if it exists; its folder must exist). "
            "Default: report.html in the current folder, never inside the run dir.",
        ),
    ] = Path("report.html"),
    debug: Debug = False,
) -> None:
    """Write one self-contained HTML report: a run (command, config, summary, curves, LR,
    evals, explanations, R matrix, GAN samples), several runs compared, or a sweep (best
    trial, history, parallel coordinates, parameter importances, sortable trial table)."""

    def go() -> None:
        from dlx.commands.report import describe, report_command

        typer.echo(describe(report_command(paths, out)))

    _guard(debug, go)


@app.command(
    epilog="""Examples:

  dlx explain outputs/digits/2026-11-30_12-00-00_ab12            # 16 test examples\n
  dlx explain outputs/cnn_small/2026-11-30_12-00-00_ab12 --n 8 --steps 128\n
  dlx explain outputs/transformer/2026-11-30_12-00-00_ab12       # attention maps\n
  dlx explain RUN --latest data.path=/data/mnist\n
  dlx explain RUN --n 64 --methods gradcam,occlusion --layer Conv_0 --patch 4\n
  dlx explain RUN --no-sanity --faith-steps 10\n
  Writes <run dir>/explain/: saliency.png, integrated_gradients.png, methods.png,
  faithfulness.png, sanity.png, summary.json (images), time_attribution.png (sequences),
  attention_layer<i>.png (Transformers), attributions.npz."""
)
def explain(
    path: Annotated[
        str, typer.Argument(help="A run dir (outputs/<recipe>/<time>_<id>).", show_default=False)
    ],
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="key=value changes to the run's saved config (e.g. data.path=...).",
            show_default=False,
        ),
    ] = None,
    n: Annotated[int, typer.Option("--n", min=1, help="Test examples to explain.")] = 32,
    steps: Annotated[
        int,
        typer.Option(
            "--steps",
            min=1,
            help="Integrated-gradients steps to start with (doubled, up to 16x, until "
            "attributions sum to f(x) - f(baseline) within 1%).",
        ),
    ] = 64,
    latest: Annotated[bool, typer.Option("--latest", help="Latest, not best, checkpoint.")] = False,
    methods: Annotated[
        str,
        typer.Option(
            "--methods",
            help="Image methods, comma-separated: saliency, integrated_gradients, smoothgrad, "
            "gradcam, occlusion, or all (gradcam only where the model has a conv layer).",
        ),
    ] = "all",
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer",
            help="Grad-CAM's layer, a module path (e.g. Conv_1); default: the last conv layer.",
            show_default=False,
        ),
    ] = None,
    noise: Annotated[
        float, typer.Option("--noise", help="SmoothGrad noise sigma, a fraction of the data range.")
    ] = 0.15,
    samples: Annotated[int, typer.Option("--samples", help="SmoothGrad noisy samples.")] = 32,
    patch: Annotated[
        int | None,
        typer.Option(
            "--patch",
            help="Occlusion patch side in pixels (default ~1/7 of the image side).",
            show_default=False,
        ),
    ] = None,
    stride: Annotated[
        int | None,
        typer.Option(
            "--stride", help="Occlusion stride (default: half the patch).", show_default=False
        ),
    ] = None,
    faith_steps: Annotated[
        int, typer.Option("--faith-steps", help="Points of the deletion/insertion curves.")
    ] = 20,
    faith_patch: Annotated[
        int,
        typer.Option(
            "--faith-patch",
            help="Deletion/insertion unit: pixels (1) or P x P squares (P must tile the image).",
        ),
    ] = 1,
    faithfulness: Annotated[
        bool,
        typer.Option(
            "--faithfulness/--no-faithfulness",
            help="Deletion/insertion curves and AUC per method, vs random rankings.",
        ),
    ] = True,
    sanity: Annotated[
        bool,
        typer.Option(
            "--sanity/--no-sanity",
            help="Model-randomisation check: rank correlation with a random-weight model's maps.",
        ),
    ] = True,
    cascade: Annotated[
        bool,
        typer.Option("--cascade", help="Sanity check also layer by layer, from the output down."),
    ] = False,
    debug: Debug = False,
) -> None:
    """Explain a run's predictions: attribution maps, their faithfulness, attention maps.

    Image classifiers: saliency, integrated gradients, SmoothGrad, Grad-CAM and occlusion of
    the predicted class for N test examples, deletion/insertion curves with their AUC against
    random rankings, and the model-randomisation sanity check (explain/summary.json);
    sequence classifiers: integrated gradients per time step; Transformers: attention weights
    per layer and head."""

    def go() -> None:
        from dlx.commands.explain import Options, explain_run, parse_methods

        kind = "latest" if latest else "best"
        opts = Options(
            methods=parse_methods(methods),
            layer=layer,
            noise=noise,
            samples=samples,
            patch=patch,
            stride=stride,
            faith_steps=faith_steps,
            faith_patch=faith_patch,
            faithfulness=faithfulness,
            sanity=sanity,
            cascade=cascade,
        )
        result = explain_run(
            path, n=n, steps=steps, overrides=overrides or [], kind=kind, options=opts
        )
        for note in result.notes:
            typer.echo(note)
        typer.echo(f"wrote {result.out_dir}/: {', '.join(p.name for p in result.files)}")

    _guard(debug, go)


_hard_exit = False  # set for errors after which the process must not linger (a full disk)


def main() -> Any:
    from dlx.io import die_with_parent

    die_with_parent()  # a sweep trial: stop when its worker dies
    import dlx.track.plots

    dlx.track.plots.DETACHED = True  # this process ends after the command: plots finish after it
    try:
        return app()
    except SystemExit as done:
        if _hard_exit:  # Orbax's background writers would print hundreds of lines at shutdown
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code if isinstance(done.code, int) else 2)
        raise


if __name__ == "__main__":
    main()

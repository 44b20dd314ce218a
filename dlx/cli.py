"""The `dlx` command line (Typer). No ML code here and no jax import at module load:
`dlx --help` must answer instantly; each command imports what it needs when it runs."""

from __future__ import annotations

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

        con = Console(stderr=True, highlight=False)
        con.print(f"[bold red]error:[/] {err}", markup=True)
        if err.hint:
            con.print(f"[yellow]fix:[/] {err.hint}", markup=True)
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
  dlx train recipe=cnn data.path=/data/mnist outputs.dir=/scratch/runs"""
)
def train(overrides: Overrides = None, config_dir: ConfigDir = None, debug: Debug = False) -> None:
    """Train a recipe; writes everything to outputs/<recipe>/<time>_<id>/."""
    overrides = overrides or []

    def go() -> None:
        from dlx.config import compose
        from dlx.run import train as run_train

        run_train(compose(overrides, config_dir), overrides)

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
    Console(highlight=False).print(table)


def main() -> Any:
    return app()


if __name__ == "__main__":
    main()

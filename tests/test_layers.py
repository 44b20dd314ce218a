"""The shape of the code: commands sit above the engine and never import each other, nothing
in the engine imports a command or the CLI, and no two dlx modules import each other (directly
or through others). Read from the source with `ast`, function-local imports included, so a
circle hidden inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "dlx"


def _module(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """dlx modules `path` imports (a `from pkg import name` of a submodule counts as it)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("dlx"):
                out.add(name)
    return out


def graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in PKG.rglob("*.py") if "_configs" not in p.parts}
    mods = set(files)
    return {m: _imports(p, mods) - {m} for m, p in files.items()}


def _cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def _is_package_init_edge(a: str, b: str) -> bool:
    # A package's __init__ re-exporting its own submodules is not a circle of design.
    return b.startswith(a + ".") or a.startswith(b + ".")


def test_no_import_cycles() -> None:
    g = graph()
    pruned = {a: {b for b in bs if not _is_package_init_edge(a, b)} for a, bs in g.items()}
    assert _cycles(pruned) == []


def test_commands_never_import_each_other_and_the_engine_never_imports_them() -> None:
    g = graph()
    commands = {m for m in g if m.startswith("dlx.commands.")}
    assert {"dlx.commands.train", "dlx.commands.eval", "dlx.commands.runs"} <= commands
    for mod, deps in g.items():
        if mod in commands:
            assert not (deps & commands), f"{mod} imports another command: {deps & commands}"
        elif mod not in ("dlx.cli", "dlx.__main__", "dlx.api"):  # the two front ends
            assert not (deps & (commands | {"dlx.cli"})), f"{mod} imports {deps & commands}"


def test_the_checker_sees_cycles_and_layer_breaks() -> None:
    """The checks above would fail on a circle or a sideways import."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    g = graph()
    assert "dlx.setup" in g["dlx.commands.train"] and "dlx.training.loop" in g["dlx.session"]


def test_route_from_the_cli_to_the_jitted_step(cli, tmp_path: Path, monkeypatch) -> None:
    """`dlx train` reaches the task's step through the files docs/architecture.md walks
    through, in that order: the call stack at the moment the step is traced."""
    import traceback

    from dlx.tasks.supervised import Classify

    seen: list[list[str]] = []
    original = Classify.train_step

    def spy(self: Classify, state: object, batch: dict, axis: str | None) -> tuple:
        frames = traceback.extract_stack()
        seen.append(
            [
                str(Path(f.filename).relative_to(PKG.parent))
                for f in frames
                if Path(f.filename).is_relative_to(PKG)
            ]
        )
        return original(self, state, batch, axis)

    monkeypatch.setattr(Classify, "train_step", spy)
    out = cli(
        "train",
        "recipe=digits",
        "trainer.max_steps=1",
        "trainer.progress=none",
        "model.features=[4]",
        f"outputs.dir={tmp_path}",
    )  # a new model: traced afresh
    assert out.exit_code == 0, out.output
    route = [*dict.fromkeys(seen[0]), "dlx/tasks/supervised.py"]
    assert route == [
        "dlx/cli.py",
        "dlx/commands/train.py",
        "dlx/training/fit.py",
        "dlx/training/loop.py",
        "dlx/training/parallel.py",
        "dlx/tasks/supervised.py",
    ]
    doc = (PKG.parent / "docs" / "architecture.md").read_text()
    assert all(f"`{f}`" in doc for f in route), "docs/architecture.md walks the route"

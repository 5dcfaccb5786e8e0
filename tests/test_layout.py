"""The package layout holds: no import circles, no upward imports, short functions.

Imports are read with ``ast`` from the source (function-level imports included), so
the check sees what a lazy import would hide at run time.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("al_loop", "ml_backend")

# Lowest first. A module may import its own sub-package or a lower layer, never a higher one;
# sub-packages that share a layer do not import each other.
LAYERS = (
    ("errors",),
    ("settings",),
    ("data",),
    ("models",),
    ("embeddings",),
    ("training",),
    # evaluation below query: the stopping rule measures two decoders' agreement with evaluation's
    # one Cohen's kappa (evaluation imports nothing of query).
    ("evaluation",),
    ("query",),
    ("studio",),
    ("loop",),
    # science: measures, matching and exports of pit layers; report: the workspace's static page
    # (it reads maps and candidate lists as files, so it sits below the commands that write them).
    ("science", "report"),
    ("demo", "experiment", "mapping"),
    ("targets",),  # candidates, chips, HiRISE coverage and HiWish rows, from maps and science
    ("cli", "__init__"),
)
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (absolute or relative, at any depth of the file)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod where one exists
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] in PACKAGES)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: {t for t in imports_of(name, path, known) if t in known} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, sub-package) of an al_loop module."""
    part = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if part in names:
            return index, part
    raise AssertionError(f"{module}: sub-package {part!r} has no layer in tests/test_layout.py")


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_circle_in_al_loop_or_ml_backend():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_upward_import_in_al_loop():
    upward = []
    for module, targets in import_graph().items():
        if not module.startswith("al_loop"):
            continue
        here, package = layer_of(module)
        for target in targets:
            if not target.startswith("al_loop."):
                continue  # the root package itself: its __init__ imports nothing until asked (__version__)
            there, other = layer_of(target)
            if there > here or (there == here and other != package):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that climb a layer:\n" + "\n".join(sorted(upward))


def test_only_the_cli_serve_command_imports_ml_backend():
    offenders = [m for m, targets in import_graph().items()
                 if m.startswith("al_loop") and m != "al_loop.cli.serve" and any(t.startswith("ml_backend") for t in targets)]
    assert not offenders
    serve = ast.parse((ROOT / "al_loop" / "cli" / "serve.py").read_text())
    for node in ast.walk(serve):
        if isinstance(node, ast.FunctionDef):
            imports = [n for n in ast.walk(node) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ml_backend")]
            assert not imports or node.name == "run", f"cli.serve.{node.name} imports ml_backend"


def test_ml_backend_does_not_reach_into_the_loop():
    """The backend sits beside the loop: it may use studio, training and below, and the workspace
    (the settings and task roles it shares with the loop), not the loop's commands, sim or cli."""
    bad = [f"{m} -> {t}" for m, targets in import_graph().items() if m.startswith("ml_backend")
           for t in targets if t.startswith(("al_loop.loop", "al_loop.demo", "al_loop.experiment", "al_loop.cli"))
           and t != "al_loop.loop.workspace"]
    assert not bad


def test_no_command_imports_another_commands_internals():
    """Commands share code through the layers below them, never through each other (a module of a
    command's own room may read its results: experiment.tables prints simulate's report)."""
    commands = ("al_loop.loop.next_batch", "al_loop.loop.init", "al_loop.mapping.run", "al_loop.experiment.simulate",
                "al_loop.demo.run", "al_loop.mapping.from_dataset")
    bad = [f"{m} -> {t}" for m, targets in import_graph().items() for t in targets
           if t in commands and m != "al_loop.__init__" and not m.startswith(("al_loop.cli.", "al_loop.demo.run"))
           and m.rpartition(".")[0] != t.rpartition(".")[0]]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("package", PACKAGES)
def test_functions_are_short(package):
    long = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_every_user_error_derives_from_the_one_base():
    """Error classes are defined in al_loop/errors.py only (ml_backend's HTTP errors aside)."""
    strays = []
    for path in sorted((ROOT / "al_loop").rglob("*.py")):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and (node.name.endswith("Error") or any(
                    getattr(b, "id", "").endswith(("Error", "Exception")) for b in node.bases)):
                strays.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not strays, "define user errors in al_loop/errors.py:\n" + "\n".join(strays)


def test_the_public_api_resolves_without_loading_torch_first():
    import subprocess
    import sys

    code = ("import sys, al_loop; assert 'torch' not in sys.modules, 'import al_loop loaded torch'; "
            "[getattr(al_loop, n) for n in al_loop.__all__]; print(len(al_loop.__all__))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) > 10

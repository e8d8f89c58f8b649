"""The package's shape, read from the source (AST), every import counted, function-local ones too:
imports run one way (DESIGN.md: data/reasoning/teacher <- model <- train <- evaluate <- methods <- cli), no module
imports one that imports it back, and the teacher / data / reasoning side never imports JAX."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "distill_jax"
# Lower rank = lower layer; a module may import its own layer or lower ones. The shared machinery (config,
# fileio, progress) sits under everything; reasoning (answer checking) under data (problems normalise answers
# with it); testing (a loopback teacher endpoint) beside the teacher; cli on top, imported by nothing.
RANKS = {"config": 0, "config_fields": 0, "fileio": 0, "progress": 0, "reasoning": 1, "data": 2, "teacher": 3, "testing": 3,
         "model": 4, "train": 5, "evaluate": 6, "methods": 7, "cli": 8}
NO_JAX = ("reasoning", "data", "teacher", "testing", "config", "config_fields", "fileio", "progress")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rsplit(".", 1)[0]
    return _imports_of(path.read_text(encoding="utf-8"), package)


def _imports_of(source: str, package: str) -> set[str]:
    """Every module `source` imports, at any depth of the code (absolute names)."""
    tree = ast.parse(source)
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            # `from distill_jax.train import batches` imports the module distill_jax.train.batches
            out.update(f"{mod}.{alias.name}" for alias in node.names)
    return out


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: sorted(m for m in _imports(path) if m in MODULES and m != name) for name, path in MODULES.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_module_has_a_layer():
    unranked = sorted({_layer(m) for m in MODULES if m != "distill_jax"} - set(RANKS))
    assert not unranked, f"packages/modules without a layer in RANKS: {unranked}"


def test_imports_run_one_way():
    upward = [f"{m} -> {dep}" for m, deps in GRAPH.items() if m != "distill_jax" for dep in deps
              if dep != "distill_jax" and RANKS[_layer(dep)] > RANKS[_layer(m)]]
    assert not upward, "imports that run upward:\n" + "\n".join(upward)


def test_no_import_cycles():
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for dep in GRAPH[node]:
            if state.get(dep) == "open":
                cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for module in GRAPH:
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_library_never_imports_cli():
    users = [m for m, deps in GRAPH.items() if _layer(m) != "cli" and any(_layer(d) == "cli" for d in deps)]
    assert not users, f"library modules importing distill_jax.cli: {users}"


@pytest.mark.parametrize("layer", NO_JAX)
def test_no_jax_below_the_model(layer):
    hits = [m for m, p in MODULES.items() if _layer(m) == layer
            for imp in _imports(p) if imp.split(".")[0] in ("jax", "jaxlib", "flax", "optax", "orbax")]
    assert not hits, f"{layer} must not import JAX: {sorted(set(hits))}"


def test_the_checker_sees_function_local_and_relative_imports():
    """The graph must count an import hidden inside a function, or a cycle could hide there."""
    source = "def f():\n    from distill_jax.train import loop\n    import distill_jax.model.t5\n    from . import hf\n"
    assert {"distill_jax.train.loop", "distill_jax.model.t5", "distill_jax.model.hf"} <= _imports_of(
        source, "distill_jax.model")

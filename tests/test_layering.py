"""The arrows between the packages run one way (docs/architecture.md), read from the import
statements themselves (module level and inside functions alike) with ``ast``:

    launcher -> engine -> (models, tasks, data) -> (prompts, backbones, metrics) -> registry/config
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "deepprompt"
PLUGINS = ("prompts", "tasks", "models", "metrics", "data")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file; ``from pkg import mod`` counts as
    ``pkg.mod`` when ``mod`` is a module, ``from .x import y`` is resolved against the package."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module_name(path).split(".")
                pkg = pkg[:len(pkg) - node.level + (path.name == "__init__.py")]
                base = ".".join(pkg + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES}
    return out


def modules_under(prefix: str) -> dict[str, Path]:
    return {m: p for m, p in MODULES.items() if m == prefix or m.startswith(prefix + ".")}


def offending(prefix: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{m} imports {i}" for m, p in modules_under(prefix).items() for i in imports(p)
                  if any(i == f or i.startswith(f + ".") for f in forbidden))


def test_the_walk_sees_imports():
    """The checks below can fail: the walk finds a plugin import where there is one."""
    assert "deepprompt.tasks.tagging" in imports(MODULES["deepprompt.tasks.ner"])
    assert "deepspeed" in imports(MODULES["deepprompt.engine.ds_setup"])  # inside a function
    assert offending("deepprompt.models", ("deepprompt.registry",))


def test_config_is_a_leaf():
    assert modules_under("deepprompt.config")
    forbidden = tuple(f"deepprompt.{p}" for p in (*PLUGINS, "engine"))
    assert offending("deepprompt.config", forbidden) == []


@pytest.mark.parametrize("package", ["tasks", "metrics", "data"])
def test_tasks_metrics_and_data_know_no_deepspeed_nor_collectives(package):
    assert offending(f"deepprompt.{package}", ("deepspeed", "torch.distributed", "deepprompt.engine")) == []


@pytest.mark.parametrize("package", ["models", "prompts"])
def test_models_and_prompts_import_no_task(package):
    assert offending(f"deepprompt.{package}", ("deepprompt.tasks", "deepprompt.engine")) == []


def test_no_import_cycle_through_the_preflight():
    """The preflight lives in the engine and nothing it imports (transitively) imports it back."""
    assert "deepprompt.preflight" not in MODULES, "preflight.py moved to engine/"
    start = "deepprompt.engine.preflight"
    seen, todo = set(), [i for i in imports(MODULES[start]) if i in MODULES]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [i for i in imports(MODULES[m]) if i in MODULES]
    assert start not in seen, f"{start} imports a module that imports it back"


def test_no_module_is_over_400_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}

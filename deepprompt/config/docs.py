"""``docs/config.md``: every key with its default and doc, generated from the field docstrings."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re

from deepprompt.config.sections import RunConfig


def reference_markdown() -> str:
    """docs/config.md: every key with its default and doc, one table per section, generated from
    the field docstrings (``python -m deepprompt config-docs > docs/config.md``; a test keeps the file
    equal to this)."""

    def literal(default: str) -> str:
        return {"None": "null", "True": "true", "False": "false"}.get(default, default.strip("'"))

    sections: dict[str, list[str]] = {}
    for key, default, doc in field_docs():
        section = key.split(".")[0] if "." in key else "run"
        doc = re.sub(r"``([^`]+)``", r"`\1`", doc).replace("|", "\\|")
        sections.setdefault(section, []).append(f"| `{key}` | `{literal(default)}` | {doc} |")
    out = ["# Configuration reference", "",
           "Generated from the field docstrings of `deepprompt/config/sections.py` by "
           "`python -m deepprompt config-docs > docs/config.md`; a test fails when this page and the code differ.",
           "How a run is configured (defaults, a YAML/JSON file, `key=value` overrides) and how the DeepSpeed JSON's "
           '`"auto"` values are filled: [README, Configuration](../README.md#configuration).', ""]
    for section, rows in sections.items():
        out += [f"## `{section}`" if section != "run" else "## Top level", "", "| key | default | meaning |",
                "|---|---|---|", *rows, ""]
    return "\n".join(out)


def field_docs(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every config key, read from the field docstrings (for the README)."""
    docs: dict[str, str] = {}
    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            rows += field_docs(type(default), prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, repr(default), docs.get(f.name, "")))
    return rows

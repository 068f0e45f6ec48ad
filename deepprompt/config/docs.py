"""``docs/config.md``: every key with its default and doc, generated from the field docstrings."""
from __future__ import annotations

import ast
import dataclasses
import inspect
import re

from deepprompt.config.sections import RunConfig


def reference_markdown(families: list[tuple[str, type]] = ()) -> str:
    """docs/config.md: every key with its default and doc, one table per section, generated from
    the field docstrings (``python -m deepprompt config-docs > docs/config.md``; a test keeps the file
    equal to this). ``families``: (title, options dataclass) of the task families' own ``task.*`` keys
    (``deepprompt.tasks.option_families()``; this package imports no task)."""

    def literal(default: str) -> str:
        return {"None": "null", "True": "true", "False": "false"}.get(default, default.strip("'"))

    def row(key: str, default: str, doc: str) -> str:
        doc = re.sub(r"``([^`]+)``", r"`\1`", doc).replace("|", "\\|")
        return f"| `{key}` | `{literal(default)}` | {doc} |"

    sections: dict[str, list[str]] = {}
    for key, default, doc in field_docs():
        section = key.split(".")[0] if "." in key else "run"
        sections.setdefault(f"`{section}`" if section != "run" else "Top level", []).append(row(key, default, doc))
    for title, options in families:  # after the task section: the keys only some tasks have
        sections[f"`task` keys of {title}"] = [row(*r) for r in field_docs(options, "task.")]
    sections = dict(sorted(sections.items(), key=lambda kv: list(sections).index(kv[0]) if "keys of" not in kv[0]
                           else list(sections).index("`task`") + 0.5))
    out = ["# Configuration reference", "",
           "Generated from the field docstrings of `deepprompt/config/sections.py` and of the task families' "
           "options (`Options` of the task classes) by `python -m deepprompt config-docs > docs/config.md`; a test "
           "fails when this page and the code differ.",
           "How a run is configured (defaults, a YAML/JSON file, `key=value` overrides) and how the DeepSpeed JSON's "
           '`"auto"` values are filled: [README, Configuration](../README.md#configuration). A key of a task family '
           "is given like any `task.*` key (`task.doc_stride=64`); a task that does not have it refuses it.", ""]
    for heading, rows in sections.items():
        out += [f"## {heading}", "", "| key | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(out)


def field_docs(cls=RunConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, doc) for every config key, read from the field docstrings (for the README)."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):  # inherited fields too
        body = ast.parse(inspect.getsource(klass)).body[0].body
        for a, b in zip(body, body[1:]):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = " ".join(str(b.value.value).split())
    rows = []
    for f in dataclasses.fields(cls):
        if f.name == getattr(cls, "OPEN_KEYS", None):  # not a key: the task families' keys (their own tables)
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            rows += field_docs(type(default), prefix + f.name + ".")
        else:
            rows.append((prefix + f.name, repr(default), docs.get(f.name, "")))
    return rows

"""Loading a run config: a YAML/JSON file, then dotted ``key=value`` overrides, built into the typed
sections (``sections.py``) with every unknown key and wrong type refused in one line naming the key."""
from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import math
import os
import typing
from pathlib import Path

import yaml

from deepprompt.config.sections import RunConfig
from deepprompt.errors import ConfigError
from deepprompt.fileio import load_json, read_text

log = logging.getLogger("deepprompt")


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one YAML mapping."""

    def __init__(self, key, first_line: int, mark):
        super().__init__(None, None, f"{key!r} is given twice (first on line {first_line + 1}; only the last "
                                     f"would count)", mark)
        self.key = key


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``, but a key given twice in one mapping is an error (PyYAML keeps the last
    and drops the first without a word); a merge key's (``<<: *base``) keys may still be overridden."""

    def construct_mapping(self, node, deep=False):
        first: dict = {}
        for key_node, _ in node.value if isinstance(node, yaml.MappingNode) else ():
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first:
                    raise DuplicateKeyError(key, first[key], key_node.start_mark)
                first[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: PyYAML's own construct_mapping says so
                pass
        return super().construct_mapping(node, deep)


def _yaml(text: str):
    return yaml.load(text, _Loader)  # noqa: S506 - a SafeLoader


def _build(cls, data: dict, prefix: str, also_known: tuple[str, ...] = (), owner: str = ""):
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and wrong types; a class with
    ``OPEN_KEYS`` (``TaskConfig``) keeps the keys it has no field for there, for their owner to build.
    ``also_known``/``owner`` only word the message (the keys of the section around ``cls``, its task)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r:.60}")
    hints = typing.get_type_hints(cls)
    open_keys = getattr(cls, "OPEN_KEYS", None)
    names = [f.name for f in dataclasses.fields(cls) if f.name != open_keys]
    kwargs = {}
    for key, value in data.items():
        if key not in names and open_keys:
            kwargs.setdefault(open_keys, {})[key] = value
            continue
        if key not in names:
            known = [*also_known, *names]
            close = difflib.get_close_matches(key, known, n=1)
            whose = f" for task {owner}" if owner else ""
            hint = f" (did you mean {prefix}{close[0]}?)" if close else f"{whose} (known: {', '.join(known)})"
            raise ConfigError(f"{prefix}{key}: unknown config key{hint}")
        kwargs[key] = _coerce(hints[key], value, prefix + key)
    return cls(**kwargs)


def build_options(cls, data: dict, prefix: str, section, owner: str):
    """A task family's keys (``TaskConfig.options``) built into its options dataclass ``cls`` by the
    same coercion as every section: wrong types and unknown keys refused in one line naming the key
    (``task.doc_stride: unknown config key for task wnut16 (known: ...)``)."""
    common = tuple(f.name for f in dataclasses.fields(section) if f.name != getattr(section, "OPEN_KEYS", None))
    return _build(cls, data, prefix, common, owner)


def _coerce(tp, value, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if dataclasses.is_dataclass(args[0]):
            return [_build(args[0], v, f"{key}[{i}].") for i, v in enumerate(value)]
        return [_coerce(args[0], v, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {_coerce(args[0], k, key): _coerce(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)  # YAML 1.1 reads "3e-2" as a string
        except (ValueError, OverflowError):
            number = None
        if number is not None:
            if not math.isfinite(number):  # nan/inf would pass every range check below
                raise ConfigError(f"{key}: expected a finite number, got {value!r}")
            return number
    if tp is bool and isinstance(value, bool):
        return value
    if tp in (int, str) and isinstance(value, tp) and not isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _set_dotted(tree: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = tree
    for i, p in enumerate(parts[:-1]):
        if isinstance(node.get(p), list):  # an earlier override gave the list: tasks=[...] tasks.0.key=v
            rest = ".".join(parts[i + 1:])
            node[p] = _merge_entries(node[p], parse_overrides([f"{rest}={json.dumps(value)}"]), p)
            return
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {p} is not a section")
    last = parts[-1]  # a mapping merges into what earlier overrides set, as it does into the file's
    node[last] = _merge(node[last], value, f"{dotted}.") if isinstance(value, dict) and isinstance(node.get(last), dict) \
        else value


def _comment(raw: str) -> str:
    """What follows the value in ``raw``: a YAML comment (`` #...``), which the parser drops silently."""
    node = yaml.compose(raw, _Loader)  # noqa: S506 - a SafeLoader
    return raw[node.end_mark.index if node is not None else 0:].strip()


def parse_overrides(items: list[str]) -> dict:
    tree: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected key=value (e.g. prompt.length=16)")
        key, raw = (s.strip() for s in item.split("=", 1))
        if not all(key.split(".")):
            raise ConfigError(f"override {item!r}: {'an empty name in the key' if key else 'no key before ='} "
                              f"(expected key=value, e.g. prompt.length=16)")
        try:
            value = _yaml(raw) if raw != "" else ""
            comment = _comment(raw)
        except DuplicateKeyError as e:
            raise ConfigError(f"{key}: {e.key!r} is given twice in {raw!r}") from None
        except yaml.YAMLError:
            value, comment = raw, ""
        if comment:  # YAML drops it: `output_dir=runs/a #2` would write to runs/a
            raise ConfigError(f"{key}: YAML reads {comment!r} in {raw!r} as a comment and would drop it; quote the "
                              f"value ({key}='{raw}') or leave the ' #' out")
        _set_dotted(tree, key, value)
    return tree


def _merge(base: dict, over: dict, prefix: str = "") -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and out.get(k) is not None and not isinstance(out[k], (dict, list)):
            # ``train: 5`` then ``train.lr=...``: the override must not quietly replace the bad section
            raise ConfigError(f"{prefix}{k}: expected a mapping, got {out[k]!r:.60}")
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, f"{prefix}{k}.")
        elif isinstance(v, dict) and isinstance(out.get(k), list):  # tasks.<index or name>.key=value
            out[k] = _merge_entries(out[k], v, f"{prefix}{k}")
        else:
            out[k] = v
    return out


def _merge_entries(entries: list, over: dict, key: str) -> list:
    """Overrides of single list entries, selected by index or by their ``name``."""
    out = list(entries)
    names = [e.get("name") if isinstance(e, dict) else None for e in out]
    for sel, v in over.items():
        sel = str(sel)
        if sel.isdigit() and int(sel) < len(out):
            i = int(sel)
        elif sel in names:
            i = names.index(sel)
        else:
            raise ConfigError(f"{key}.{sel}: no such entry (use an index 0..{len(out) - 1} or a name: "
                              f"{', '.join(str(n) for n in names)})")
        out[i] = _merge(out[i], v, f"{key}.{sel}.") if isinstance(v, dict) and isinstance(out[i], dict) else v
    return out


def _with_task_defaults(data: dict) -> dict:
    """A multi-task config's ``task`` section holds every ``tasks`` entry's defaults."""
    tasks, shared = data.get("tasks"), data.get("task")
    if not isinstance(tasks, list) or not isinstance(shared, dict):
        return data
    return {**data, "tasks": [_merge(shared, e) if isinstance(e, dict) else e for e in tasks]}


def read_config_file(path: str | os.PathLike) -> dict:
    """The run-config file as a dict of sections; anything wrong with the file itself (not UTF-8, not
    YAML/JSON, not a mapping, a section that is not a mapping) is one line naming it. An empty file
    is allowed (the run is the embedded default) but said in a warning."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--config: file not found: {p}")
    text = read_text(p, ConfigError)
    try:
        # NaN passes here (as in YAML): every number is checked finite by its key when the config is built
        data = load_json(text, p, ConfigError, allow_nan=True) if p.suffix == ".json" else _yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise ConfigError(f"{p}{f':{mark.line + 1}' if mark is not None else ''}: not valid YAML: "
                          f"{getattr(e, 'problem', None) or e}") from None
    if data is None or data == {}:
        log.warning("%s: the config file is empty: running the embedded default job (plus any key=value "
                    "overrides)", p)
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (model:, prompt:, task:, train: ...), got "
                          f"{type(data).__name__} {data!r:.60}")
    sections = [f.name for f in dataclasses.fields(RunConfig) if f.name not in ("tasks", "output_dir")]
    for name in sections:
        if name in data and not isinstance(data[name], dict):
            raise ConfigError(f"{p}: {name}: expected a mapping, got {data[name]!r:.60}")
    if data.get("tasks") is not None and not isinstance(data["tasks"], list):
        raise ConfigError(f"{p}: tasks: expected a list of task sections, got {data['tasks']!r:.60}")
    return data


def from_dict(cls, data: dict, prefix: str = ""):
    """Build and check any config dataclass from a plain dict (e.g. one read back from JSON)."""
    cfg = _build(cls, data, prefix)
    cfg.check()
    return cfg


def entry_key(dotted: str) -> str:
    """The task key of a ``tasks.<name or index>.<key>`` override (``<key>`` where it names none): what a
    run with one task takes as ``task.<key>``."""
    parts = dotted.split(".", 2)
    return parts[2] if len(parts) == 3 else "<key>"


def config_from_dict(data: dict, overrides: list[str] | None = None) -> RunConfig:
    """The embedded defaults, updated by ``data`` and then by ``key=value`` overrides."""
    over = parse_overrides(overrides or [])
    # the shared task defaults first (file + overrides), then per-entry overrides (tasks.<i>.key)
    entry_over = over.pop("tasks", None) if isinstance(over.get("tasks"), dict) else None
    merged = _with_task_defaults(_merge(data, over))
    if entry_over is not None:
        if not isinstance(merged.get("tasks"), list):  # a single-task run: there are no entries to select
            dotted = next(iter(flatten({"tasks": entry_over})))
            raise ConfigError(f"{dotted}: this run has one task (no tasks: list); write task.{entry_key(dotted)}=...")
        merged = _merge(merged, {"tasks": entry_over})
    return from_dict(RunConfig, merged)


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """The embedded defaults, updated by the file at ``path`` and then by ``key=value`` overrides."""
    return config_from_dict(read_config_file(path) if path else {}, overrides)


def flatten(d: dict | None, prefix: str = "") -> dict:
    """A nested config dict as dotted keys: ``train.lr``, ``tasks[1].name``; ``mixer.weights`` (a
    mapping of task to weight) stays one value."""
    out = {}
    for k, v in (d or {}).items():
        if isinstance(v, dict) and k != "weights":
            out.update(flatten(v, f"{prefix}{k}."))
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            for i, entry in enumerate(v):
                out.update(flatten(entry, f"{prefix}{k}[{i}]."))
        else:
            out[prefix + k] = v
    return out

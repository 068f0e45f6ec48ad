"""The search space of ``deepprompt sweep``: one ``--space 'key=distribution(args)'`` per searched
run-config key, parsed into ``Dimension``s that ask an Optuna trial for a value.

    train.lr=loguniform(3e-3,1e-1)      a float, uniform in log space
    prompt.dropout=uniform(0.0,0.3)     a float
    prompt.length=int(8,128)            an integer (both ends included); intlog(8,128): in log space
    prompt.length=choice(16,32,64,128)  one of the values (YAML scalars: numbers, true/false, null, names)

Every error is one line naming ``--space`` and the text given; the key and each value are checked
against the run config (``check_against``) before any run starts."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import yaml

from deepprompt.errors import ConfigError

KINDS = {"loguniform": 2, "uniform": 2, "int": 2, "intlog": 2, "choice": None}
_SPEC = re.compile(r"^\s*([A-Za-z_][\w.\[\]]*)\s*=\s*([a-z]+)\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Dimension:
    key: str
    """A dotted run-config key, e.g. ``train.lr``."""
    kind: str
    """loguniform | uniform | int | intlog | choice."""
    args: tuple
    """(low, high) or the choices."""
    text: str
    """As given on the command line (for messages and the report)."""

    def suggest(self, trial):
        """This dimension's value for an Optuna trial (an enqueued trial's fixed value when it has one)."""
        if self.kind in ("loguniform", "uniform"):
            return trial.suggest_float(self.key, *self.args, log=self.kind == "loguniform")
        if self.kind in ("int", "intlog"):
            return trial.suggest_int(self.key, *self.args, log=self.kind == "intlog")
        return trial.suggest_categorical(self.key, list(self.args))

    def probe_values(self) -> list:
        """Values that must all be valid settings of ``key`` (the ends, or every choice)."""
        return list(self.args)

    def override(self, value) -> str:
        """``key=value`` as a run-config override (the value in YAML/JSON form)."""
        return f"{self.key}={json.dumps(value)}"


def _scalar(text: str):
    """A YAML scalar, where a number is a number even in YAML 1.1's eyes a string (``1e-7``)."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def parse_dimension(text: str) -> Dimension:
    """One ``--space`` argument."""
    def bad(why: str) -> ConfigError:
        return ConfigError(f"--space {text!r}: {why}")

    m = _SPEC.match(text)
    if not m:
        raise bad("expected key=distribution(args), e.g. train.lr=loguniform(3e-3,1e-1) or "
                  "prompt.length=choice(16,32,64); distributions: " + ", ".join(KINDS))
    key, kind, inner = m.groups()
    if kind not in KINDS:
        raise bad(f"unknown distribution {kind!r} (known: {', '.join(KINDS)})")
    parts = [p.strip() for p in inner.split(",")] if inner.strip() else []
    if any(p == "" for p in parts):
        raise bad("empty argument")
    try:
        values = [_scalar(p) for p in parts]
    except yaml.YAMLError:
        raise bad(f"cannot read the arguments {inner!r}") from None
    if kind == "choice":
        if not values:
            raise bad("choice() needs at least one value")
        if len({json.dumps(v) for v in values}) != len(values):
            raise bad("a value is listed twice")
        if any(isinstance(v, (list, dict)) for v in values):
            raise bad("choices must be scalars (numbers, true/false, null, names)")
        return Dimension(key, kind, tuple(values), text)
    if len(values) != 2:
        raise bad(f"{kind}() takes two numbers (low, high), got {len(values)}")
    if kind in ("int", "intlog"):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise bad(f"{kind}() takes two integers, got {inner!r}")
    else:
        try:
            values = [float(v) for v in values if not isinstance(v, bool)]
        except (TypeError, ValueError):
            raise bad(f"{kind}() takes two numbers, got {inner!r}") from None
        if len(values) != 2:
            raise bad(f"{kind}() takes two numbers, got {inner!r}")
    low, high = values
    if not low < high:
        raise bad(f"low must be < high, got {low} and {high}")
    if kind in ("loguniform", "intlog") and low <= 0:
        raise bad(f"{kind}() needs low > 0, got {low}")
    return Dimension(key, kind, (low, high), text)


def parse_space(texts: list[str]) -> list[Dimension]:
    dims = [parse_dimension(t) for t in texts]
    keys = [d.key for d in dims]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ConfigError(f"--space: key {dup[0]} is searched twice")
    return dims


def check_against(dims: list[Dimension], load) -> None:
    """Every value a dimension can take is a valid run config: ``load(overrides)`` builds and checks
    one (raising ``ConfigError``); the message then names the ``--space`` argument."""
    for d in dims:
        for v in d.probe_values():
            try:
                load([d.override(v)])
            except ConfigError as e:
                raise ConfigError(f"--space {d.text!r}: {d.key}={v!r} is not a valid setting: {e}") from None

"""The files a multi-node launch reads: the hostfile and ``.deepspeed_env``, checked strictly.

DeepSpeed's own parser ignores text after ``slots=N`` and crashes with a bare ValueError on a blank
line or a comment in ``.deepspeed_env``; these checks name file:line instead, and also catch what
parses but cannot work (``slots=0``, ``localhost`` next to other hosts: every node would run the
ranks meant for "localhost" itself).
"""
from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

from deepprompt.errors import ConfigError
from deepprompt.fileio import decode

_LINE = re.compile(r"^(?P<host>\S+)\s+slots=(?P<slots>\d+)(?P<rest>(?:\s+max_slots=\d+)?)\s*(?:#.*)?$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOOPBACK = ("localhost", "127.0.0.1", "::1")
DEFAULT_DS_HOSTFILE = "/job/hostfile"  # what `deepspeed` reads when no --hostfile is given


def parse_hostfile(path: str | os.PathLike) -> "OrderedDict[str, int]":
    """``host -> slots`` in file order; ConfigError naming file:line for anything wrong."""
    p = Path(path)
    try:
        lines = _text(p.read_bytes(), p).splitlines()
    except OSError as e:
        raise ConfigError(f"hostfile {p}: cannot read it ({e.strerror})") from None
    hosts: OrderedDict[str, int] = OrderedDict()
    first_line: dict[str, int] = {}
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            raise ConfigError(f"{p}:{n}: expected '<hostname> slots=<ranks on that node>', got {line!r}")
        host, slots = m.group("host"), int(m.group("slots"))
        if slots < 1:
            raise ConfigError(f"{p}:{n}: {host} has slots={slots}; a node needs at least 1 slot (or remove the line)")
        same = next((h for h in hosts if h.lower() == host.lower()), None)  # host names ignore case
        if same is not None:
            raise ConfigError(f"{p}:{n}: {host} is listed twice (first on line {first_line[same]}"
                              f"{f' as {same}' if same != host else ''})")
        hosts[host], first_line[host] = slots, n
    if not hosts:
        raise ConfigError(f"{p}: no hosts (expected lines like 'node-001 slots=8')")
    if len(hosts) > 1:
        for host in hosts:
            if host.lower() in LOOPBACK:
                raise ConfigError(f"{p}:{first_line[host]}: {host} next to other hosts: every node would take it as "
                                  f"itself; use the node's real hostname")
    return hosts


def parse_env_file(path: str | os.PathLike) -> dict[str, str]:
    """``.deepspeed_env``: exactly ``KEY=VALUE`` per line (DeepSpeed's runner accepts nothing else:
    no comments, no blank lines)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read it ({e.strerror})") from None
    text = _text(data, p)
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the newline that ends the last line
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        key, sep, value = line.partition("=")
        if not sep or not _ENV_KEY.match(key.strip()):
            what = "a blank line" if not line.strip() else ("a comment" if line.lstrip().startswith("#") else repr(line))
            raise ConfigError(f"{p}:{n}: expected KEY=VALUE, got {what} (DeepSpeed's runner accepts no blank lines or "
                              f"comments in this file)")
        if key.strip() in first:  # the runner would export the last one only
            raise ConfigError(f"{p}:{n}: {key.strip()} is set twice (first on line {first[key.strip()]}); keep one")
        out[key.strip()], first[key.strip()] = value.strip(), n
    return out


def _text(data: bytes, path: Path) -> str:
    """UTF-8 without a byte-order mark: DeepSpeed's runner reads these files itself and would take a
    BOM as part of the first host name or key."""
    if data.startswith(b"\xef\xbb\xbf"):
        raise ConfigError(f"{path}:1: starts with a byte-order mark, which DeepSpeed's runner would read as part of "
                          f"the first line; save it as UTF-8 without a BOM")
    return decode(data, path, ConfigError)


def deepspeed_env_files(cwd: str | os.PathLike = ".") -> list[Path]:
    """The files DeepSpeed's runner reads (``$DS_ENV_FILE`` name, default ``.deepspeed_env``, in the
    home directory then in the launch directory), those that exist."""
    name = os.environ.get("DS_ENV_FILE", ".deepspeed_env")
    return [p for p in (Path.home() / name, Path(cwd) / name) if p.is_file()]


def describe(hostfile: str | os.PathLike, env_files: list[Path] | None = None) -> str:
    """Check a hostfile (and the .deepspeed_env files) and say what they hold, in one line."""
    hosts = parse_hostfile(hostfile)
    text = (f"{hostfile}: {len(hosts)} node(s), {sum(hosts.values())} rank(s): "
            + ", ".join(f"{h} slots={s}" for h, s in hosts.items()))
    for f in deepspeed_env_files() if env_files is None else env_files:
        text += f" | {f}: " + (", ".join(parse_env_file(f)) or "empty")
    return text


# ------------------------------------------------------------------------------ from the launcher

_HOSTFILE_FLAGS = ("--hostfile", "-H", "-hostfile", "--machinefile", "-machinefile")


def launcher_hostfile(pid: int | None = None) -> Path | None:
    """The hostfile of the launcher that started this process, when it runs on this node: the
    ``--hostfile``/``-H`` of a ``deepspeed`` runner or the ``-hostfile`` of ``mpirun`` among this
    process's ancestors (resolved against that process's directory). None when not found."""
    pid = os.getppid() if pid is None else pid
    for _ in range(8):  # rank <- launch.py <- deepspeed runner <- shell ...
        if pid <= 1:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return None
        found = _hostfile_arg(argv)
        if found is None and any(os.path.basename(a) == "deepspeed" for a in argv[:2]):
            found = DEFAULT_DS_HOSTFILE
        if found is not None:
            path = Path(cwd) / found
            return path if path.is_file() else None
        pid = parent
    return None


def _hostfile_arg(argv: list[str]) -> str | None:
    launcher = any(os.path.basename(a) in ("deepspeed", "mpirun", "mpiexec", "orterun") for a in argv[:2])
    if not launcher:
        return None
    for i, a in enumerate(argv):
        if a in _HOSTFILE_FLAGS and i + 1 < len(argv):
            return argv[i + 1]
        for flag in _HOSTFILE_FLAGS:
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
    return None

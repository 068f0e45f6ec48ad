"""Reading the files a user hands us (data, run and DeepSpeed configs, checkpoints, artifacts, model
files) so that a bad file is ONE line naming it, never a library traceback.

Every text reader of the package goes through ``read_text``/``text_lines``: the bytes must be UTF-8
(a byte-order mark, as Excel and Notepad write it, is accepted and dropped), and a file that is not
names the line and byte offset of the first bad byte. Tensors go through ``open_safetensors`` /
``load_safetensors``, which name the file when its header is truncated or corrupt.
"""
from __future__ import annotations

import codecs
import gzip
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from deepprompt.errors import ConfigError, DataError, DeepPromptError

ErrorType = type[DeepPromptError]


def decode(data: bytes, where: str | os.PathLike, error: ErrorType = DataError) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped); else ``error`` naming
    ``where:line`` and the offset of the first byte that is not UTF-8."""
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return str(memoryview(data)[bom:], "utf-8")
    except UnicodeDecodeError as e:
        at = bom + e.start  # an offset into the file as it is on disk
        line = data.count(b"\n", 0, at) + 1
        raise error(f"{where}:{line}: not UTF-8 text (byte 0x{data[at]:02x} at byte offset {at}); "
                    f"save it as UTF-8") from None


def read_bytes(path: str | os.PathLike, error: ErrorType = DataError) -> bytes:
    """The file's bytes (a ``.gz`` file decompressed); a missing, unreadable or broken file is one
    ``error`` line naming it."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except IsADirectoryError:
        raise error(f"{p}: is a directory, expected a file") from None
    except FileNotFoundError:
        raise error(f"{p}: file not found") from None
    except OSError as e:
        raise error(f"{p}: cannot read it ({e.strerror or e})") from None
    if p.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise error(f"{p}: not a readable gzip file ({e})") from None
    return data


def read_text(path: str | os.PathLike, error: ErrorType = DataError) -> str:
    """The whole file as text: UTF-8, byte-order mark dropped, ``.gz`` decompressed."""
    return decode(read_bytes(path, error), path, error)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _non_finite(value) -> tuple[str, float] | None:
    """The first NaN/±Infinity in a parsed JSON value (``NaN``, ``Infinity``, or a literal such as
    1e400 that overflows a float) as (its path, e.g. ``train.lr`` or ``[3].label``, the value).
    A loop, not recursion: the parser accepts nesting deeper than a recursive walk could follow."""
    stack = [("", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return path, node
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        stack.extend(reversed([(f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]", v) for k, v in items]))
    return None


def load_json(text: str, where: str | os.PathLike, error: ErrorType = DataError, line: int | None = None,
              what: str = "not valid JSON", hint: str = "", allow_nan: bool = False):
    """``json.loads`` of a file's text (of its line ``line``, for JSON Lines) through which every JSON
    reader of the package goes, so that each way the parser fails is one ``error`` line naming
    ``where`` (and the line), then ``hint`` (what to do): malformed JSON (with its column); a key
    given twice in one object (``json`` would keep the last and drop the first without a word); and
    what the parser raises besides ``JSONDecodeError``: ``RecursionError`` on arrays nested
    thousands deep, ``ValueError`` on an integer of more than 4300 digits; and ``NaN``/``Infinity``,
    which are not JSON (the parser accepts them; a label or a setting of NaN would travel on), unless
    ``allow_nan``: for the files this package writes itself, where a diverged loss may be NaN."""
    def fail(at_line: int | None, detail: str):
        at = f"{where}:{at_line}" if at_line is not None else str(where)
        return error(f"{at}: {what} ({detail})" + (f"; {hint}" if hint else ""))

    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as e:
        raise fail((line or 1) + e.lineno - 1, f"{e.msg} at column {e.colno}") from None
    except _DuplicateKey as e:
        raise fail(line, f"key {e.args[0]!r} is given twice in one object: only the last would count") from None
    except RecursionError:
        raise fail(line, "arrays/objects nested too deeply to read") from None
    except ValueError as e:
        raise fail(line, str(e).split(":")[0]) from None
    found = None if allow_nan else _non_finite(value)
    if found:
        where_in = f"{found[0].lstrip('.')} is " if found[0] else ""
        raise fail(line, f"{where_in}{found[1]}, not a finite number; write a finite number, or null")
    return value


def text_lines(path: str | os.PathLike, error: ErrorType = DataError, newline: str | None = None) -> Iterator[str]:
    """The file's lines as iterating over ``open(path)`` gives them (``newline=""`` keeps the line
    ends as they are, which the csv module wants), decoded as ``read_text`` does. The file is read
    and checked whole first, so a bad byte anywhere stops before any line is used."""
    return iter(io.StringIO(read_text(path, error), newline=newline))


def _safetensors_error(path: Path, e: Exception, error: ErrorType) -> DeepPromptError:
    reason = str(e).split(": ", 1)[-1] if "deserializing header" in str(e) else str(e)
    return error(f"{path}: not a readable safetensors file ({reason}); it is truncated or corrupt: copy or "
                 f"download it again")


def open_safetensors(path: str | os.PathLike, error: ErrorType = DataError):
    """``safetensors.safe_open`` of the file (its header checked against the file's size), or one
    ``error`` line naming it."""
    from safetensors import SafetensorError, safe_open

    p = Path(path)
    try:
        return safe_open(str(p), framework="pt")
    except FileNotFoundError:
        raise error(f"{p}: file not found") from None
    except (SafetensorError, OSError) as e:
        raise _safetensors_error(p, e, error) from None


def load_safetensors(path: str | os.PathLike, error: ErrorType = DataError) -> dict:
    """Every tensor of the file, on the CPU; a truncated or corrupt file is one ``error`` line."""
    from safetensors import SafetensorError

    handle = open_safetensors(path, error)
    try:
        return {k: handle.get_tensor(k) for k in handle.keys()}
    except (SafetensorError, OSError) as e:
        raise _safetensors_error(Path(path), e, error) from None


def first_broken_safetensors(directory: str | os.PathLike) -> str | None:
    """The one-line problem of the first ``*.safetensors`` file in ``directory`` whose header is
    truncated or corrupt, or None when they all open."""
    d = Path(directory)
    for f in sorted(d.glob("*.safetensors")) if d.is_dir() else []:
        try:
            open_safetensors(f, DataError)
        except DataError as e:
            return str(e)
    return None


# ------------------------------------------------------------------------------ writing

def atomic_write(path: Path, write, error: ErrorType = ConfigError) -> None:
    """``write(tmp_path)`` then rename over ``path``: a reader never sees half a file. A file that
    cannot be written (a directory in its place, a full disk) is one line naming it."""
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result is an ordinary file
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise error(f"{path}: cannot write it ({e.strerror or e})") from None
        raise


def make_output_dir(out: Path, what: str, error: ErrorType = ConfigError, key: str = "") -> None:
    """``out`` as a directory to write ``what`` into (made with its parents), the one place every
    output directory is made: a regular file at ``out`` or above it, or a directory that cannot be
    made, is one line naming it (prefixed ``key: `` where a config key or flag gave the path)."""
    out = Path(out)
    label = f"{key}: " if key else ""
    blocker = next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        where = "is a file" if blocker == out else f"is under {blocker}, a file"
        raise error(f"{label}{out}: {where}, not a directory to write {what} into; give another path")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise error(f"{label}{out}: cannot create the directory for {what} ({e.strerror or e})") from None

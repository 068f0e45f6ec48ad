"""Reading line-oriented data files with errors that name ``file:line`` (text decoding and its
errors: ``deepprompt.fileio``)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from deepprompt.errors import DataError
from deepprompt.fileio import text_lines


def iter_jsonl(path: Path, allow_empty: bool = False) -> Iterator[tuple[str, dict]]:
    """(``file:line``, object) per non-blank line. A malformed line, a line that is not a JSON
    object, and (unless ``allow_empty``) a file without any object are one-line ``DataError``s; so
    is a file that is not UTF-8 (a byte-order mark is fine)."""
    seen = False
    for lineno, line in enumerate(text_lines(Path(path)), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: malformed JSON line ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        seen = True
        yield where, row
    if not seen and not allow_empty:
        raise DataError(f"{path}: no examples (empty file)")

"""Reading line-oriented data files with errors that name ``file:line`` (text decoding and its
errors: ``deepprompt.fileio``)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from deepprompt.errors import DataError
from deepprompt.fileio import load_json, text_lines


def iter_jsonl(path: Path, allow_empty: bool = False,
               blank_lines: bool = True) -> Iterator[tuple[str, dict]]:
    """(``file:line``, object) per non-blank line. A malformed line, a line that is not a JSON
    object, and (unless ``allow_empty``) a file without any object are one-line ``DataError``s; so
    is a file that is not UTF-8 (a byte-order mark is fine). Without ``blank_lines`` a blank line
    before an object is one too: where the N-th output line must answer the N-th input line."""
    seen, blank = False, None
    for lineno, line in enumerate(text_lines(Path(path)), 1):
        if not line.strip():
            blank = blank or lineno
            continue
        where = f"{path}:{lineno}"
        if blank is not None and not blank_lines:
            raise DataError(f"{path}:{blank}: blank line; every line up to the last must be a JSON object, so that "
                            f"line N of the output answers line N of the input")
        row = load_json(line.rstrip("\n"), path, line=lineno, what="malformed JSON line")  # an error at its end stays on it
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
        seen = True
        yield where, row
    if not seen and not allow_empty:
        raise DataError(f"{path}: no examples (empty file)")


def check_header(header: list[str], where: str) -> None:
    """A header row (CSV, TSV) that names a column twice is one ``DataError`` naming ``where``
    (file:line): read into a dict, each row would silently keep only the last of the two cells.
    Empty names (the trailing empty columns spreadsheets write) may repeat."""
    seen: set[str] = set()
    for name in header:
        if name.strip() and name in seen:
            raise DataError(f"{where}: column {name!r} appears twice in the header")
        seen.add(name)

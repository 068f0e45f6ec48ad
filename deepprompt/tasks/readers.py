"""The readers of the official data formats that several tasks share, and the one field getter:
CoNLL column files, CoNLL-2012 ``*_gold_conll`` files, the bracket notation of their span columns,
IOB1 -> IOB2, and ``get_field`` (a typed field of a JSON record, or a one-line ``DataError``). Pure
functions of files and records: no tokenizer, no task config."""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepprompt.errors import DataError
from deepprompt.fileio import text_lines

log = logging.getLogger("deepprompt")


def get_field(row: dict, key: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    """``row[key]`` (``key`` may be dotted: ``target.span1_text``), of type ``kind``; else a one-line
    ``DataError`` naming ``where`` (file:line)."""
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{where}: missing field {key!r}")
        value = value[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DataError(f"{where}: field {key!r} must be {names}, got {type(value).__name__} {value!r:.40}")
    return value


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    where: str  # "file:line" of the sentence's first token


def read_conll(path: Path, tag_col: int = -1, word_col: int = 0, min_cols: int = 2,
               columns: str = "a word and a tag") -> list[Sentence]:
    """Whitespace- (or tab-) separated columns, the word in ``word_col``, the tag in ``tag_col``;
    blank lines (also lines of only whitespace) end a sentence; ``-DOCSTART-`` lines are skipped.
    A line with fewer than ``min_cols`` columns (described by ``columns``), or with another number of
    columns than the sentence's first line, is a one-line error."""
    needed = max(min_cols, *(c + 1 if c >= 0 else -c for c in (tag_col, word_col)))
    sentences, words, tags, start, width = [], [], [], 0, 0
    for lineno, line in enumerate(text_lines(path), 1):
        cols = line.split()
        if not cols or cols[0] == "-DOCSTART-":
            if words:
                sentences.append(Sentence(words, tags, f"{path}:{start}"))
            words, tags = [], []
            continue
        if len(cols) < needed:
            raise DataError(f"{path}:{lineno}: expected {columns}, got {line.strip()!r}")
        if not words:
            start, width = lineno, len(cols)
        elif len(cols) != width:  # a word holding a space, a missing or extra column: the tag column shifts
            raise DataError(f"{path}:{lineno}: {len(cols)} columns, but the sentence started on line {start} "
                            f"with {width}")
        words.append(cols[word_col])
        tags.append(cols[tag_col])
    if words:
        sentences.append(Sentence(words, tags, f"{path}:{start}"))
    if not sentences:
        raise DataError(f"{path}: no sentences (empty file?)")
    return sentences


_BRACKET = re.compile(r"\(([^()*\s]+)\*?(\)?)|\*(\)?)")


def brackets_to_bio(cells: list[str], where: str, first_line: int) -> list[str]:
    """The CoNLL bracket notation of one column (``(PERSON*``, ``*``, ``*)``, ``(ARG0*)``,
    ``(PERSON)``) -> BIO tags. ``where`` is the file, ``first_line`` the line of ``cells[0]``;
    overlapping, unopened or unclosed spans are one-line errors naming the line."""
    tags, open_label, opened_at = [], None, 0
    for i, cell in enumerate(cells):
        m = _BRACKET.fullmatch(cell)
        if m is None:
            raise DataError(f"{where}:{first_line + i}: malformed bracket cell {cell!r} "
                            f"(expected '(LABEL*', '*', '*)' or '(LABEL*)')")
        label, closes = m.group(1), bool(m.group(2) or m.group(3))
        if label is not None:
            if open_label is not None:
                raise DataError(f"{where}:{first_line + i}: span ({label} opens inside the span ({open_label} "
                                f"opened on line {opened_at}")
            tags.append(f"B-{label}")
            open_label, opened_at = label, first_line + i
        elif open_label is not None:
            tags.append(f"I-{open_label}")
        elif closes:
            raise DataError(f"{where}:{first_line + i}: ')' closes a span that was never opened")
        else:
            tags.append("O")
        if closes:
            open_label = None
    if open_label is not None:
        raise DataError(f"{where}:{opened_at}: span ({open_label} is never closed in its sentence")
    return tags


@dataclass
class GoldConllSentence:
    """One sentence of a CoNLL-2012 ``*_gold_conll`` file."""
    words: list[str]
    rows: list[list[str]]  # every column of every token line
    path: Path
    line: int  # line of the first token

    @property
    def ne_cells(self) -> list[str]:
        return [r[10] for r in self.rows]

    def arg_columns(self) -> list[list[str]]:
        """The predicate-argument columns (between the NE column and the final coreference column)."""
        return [[r[c] for r in self.rows] for c in range(11, len(self.rows[0]) - 1)]


def read_gold_conll(path: Path) -> list[GoldConllSentence]:
    """A CoNLL-2012 ``*_gold_conll`` file: ``#begin document`` / ``#end document`` lines, blank
    lines between sentences, token lines ``doc_id part word_no word POS parse lemma frameset sense
    speaker NE pred-args... coref`` (at least 12 columns, the same number on every line of a
    sentence)."""
    sentences, rows, start = [], [], 0

    def flush():
        if rows:
            sentences.append(GoldConllSentence([r[3] for r in rows], list(rows), path, start))
            rows.clear()

    for lineno, line in enumerate(text_lines(path), 1):
        if line.startswith("#"):
            flush()
            continue
        cols = line.split()
        if not cols:
            flush()
            continue
        if len(cols) < 12:
            raise DataError(f"{path}:{lineno}: expected at least 12 columns (doc_id part word_no word POS "
                            f"parse lemma frameset sense speaker NE ... coref), got {len(cols)}")
        if rows and len(cols) != len(rows[0]):
            raise DataError(f"{path}:{lineno}: {len(cols)} columns, but the sentence started on line "
                            f"{start} with {len(rows[0])}")
        if not rows:
            start = lineno
        rows.append(cols)
    flush()
    return sentences


def gold_conll_files(directory: Path) -> list[Path]:
    """Every ``*_gold_conll`` file under ``directory``, sorted; files under ``arabic``/``chinese``
    folders are left out (counted in the log): the tasks are English."""
    found = sorted(p for p in directory.rglob("*_gold_conll") if p.is_file())
    other = [p for p in found if {"arabic", "chinese"} & set(p.relative_to(directory).parts)]
    if other:
        log.info("%s: skipping %d Arabic/Chinese *_gold_conll files (the task is English)", directory, len(other))
    found = [p for p in found if p not in other]
    if not found:
        raise DataError(f"{directory}: no *_gold_conll files")
    return found


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """An I- tag that starts an entity (after O or another type) becomes B-; IOB2 is unchanged."""
    out = []
    for i, tag in enumerate(tags):
        if tag.startswith("I-"):
            prev = out[i - 1] if i else "O"
            if prev == "O" or prev[2:] != tag[2:]:
                tag = "B-" + tag[2:]
        out.append(tag)
    return out

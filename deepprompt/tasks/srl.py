"""Semantic role labelling: one example per predicate, the sentence followed by the tokenizer's own
separator and the predicate word(s) (a real text pair, never a literal "[SEP]" string); BIO role
tags on the first sub-word of each sentence word, ``-100`` on the predicate segment; span micro-F1
with seqeval over the role spans, the verb span (``V``, and ``C-V`` of a split verb) excluded as the
official srl-eval.pl does.

Label set: ``task.labels`` if given, else ``O`` + every tag of the training split, sorted. A dev/test
role never seen in training stays in the gold sequences (scored as missed) and is counted in the
log; it cannot be predicted. Continuation (``C-A1``) and reference (``R-A0``) roles are span types of
their own (as in the usual BIO evaluations); srl-eval.pl instead merges a ``C-`` span with its base
argument, so its numbers can differ slightly on sentences with discontinuous arguments.

Truncation: the predicate segment is never cut (``truncation="only_first"``); words of the sentence
past ``task.max_seq_length`` sub-words are predicted ``O`` (their roles count as missed) and
counted in the log."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepprompt.errors import DataError
from deepprompt.fileio import text_lines
from deepprompt.metrics.seqeval_f1 import entity_f1
from deepprompt.registry import TASKS
from deepprompt.tasks.base import log
from deepprompt.tasks.readers import Sentence, brackets_to_bio
from deepprompt.tasks.tagging import GOLD_CONLL_DIRS, GOLD_CONLL_HELP, LabelOptions, TaggingTask, read_gold_conll_split


@dataclass
class Frame(Sentence):
    """One predicate of a sentence: ``tags`` are its BIO roles (``B-V`` on the predicate)."""
    predicate: list[str] = None  # the words of the V span


def frames_from_columns(words: list[str], arg_columns: list[list[str]], path: str, line: int,
                        skipped: list[int]) -> list[Frame]:
    """One frame per bracketed argument column; a column without a ``(V*`` span is skipped and
    counted in ``skipped[0]``, a sentence without any predicate in ``skipped[1]``."""
    if not arg_columns:
        skipped[1] += 1
    frames = []
    for cells in arg_columns:
        tags = brackets_to_bio(cells, path, line)
        verb = [w for w, t in zip(words, tags) if t in ("B-V", "I-V")]
        if not verb:
            skipped[0] += 1
            continue
        frames.append(Frame(words, tags, f"{path}:{line}", verb))
    return frames


def _blocks(path: Path):
    """(first line, [columns per line]) per blank-line-separated block of a column file (``.gz`` or not)."""
    rows, start = [], 0
    for lineno, line in enumerate(text_lines(path), 1):
        cols = line.split()
        if not cols:
            if rows:
                yield start, rows
            rows = []
            continue
        if not rows:
            start = lineno
        rows.append(cols)
    if rows:
        yield start, rows


def props_frames(words: list[str], props: list[list[str]], path: str, line: int, skipped: list[int]) -> list[Frame]:
    """A sentence in the CoNLL-2005 props layout: ``props`` rows are the target-verb column (``-``
    or the verb) and one bracketed argument column per target verb."""
    width = len(props[0])
    for i, row in enumerate(props):
        if len(row) != width:
            raise DataError(f"{path}:{line + i}: {len(row)} props columns, but the sentence started on line "
                            f"{line} with {width}")
    n_targets = sum(row[0] != "-" for row in props)
    if n_targets != width - 1:
        raise DataError(f"{path}:{line}: the target-verb column marks {n_targets} predicate(s) but the sentence "
                        f"has {width - 1} argument column(s)")
    return frames_from_columns(words, [[row[c] for row in props] for c in range(1, width)], path, line, skipped)


def read_conll05_columns(path: Path, skipped: list[int]) -> list[Frame]:
    """A combined CoNLL-2005 column file: the word first, any other columns (POS, syntax, NE ...),
    then the target-verb column and the argument columns (found from the right: every cell of an
    argument column is bracket notation with ``*``)."""
    frames, seen = [], False
    for line, rows in _blocks(path):
        width = len(rows[0])
        for i, row in enumerate(rows):
            if len(row) != width:
                raise DataError(f"{path}:{line + i}: {len(row)} columns, but the sentence started on line "
                                f"{line} with {width}")
        target = width - 1
        while target > 0 and all("*" in row[target] for row in rows):
            target -= 1
        if target < 1:
            raise DataError(f"{path}:{line}: expected the word, then a target-verb column ('-' or the verb) and "
                            f"one bracketed argument column per predicate")
        frames += props_frames([r[0] for r in rows], [r[target:] for r in rows], str(path), line, skipped)
        seen = True
    if not seen:
        raise DataError(f"{path}: no sentences (empty file?)")
    return frames


def read_words_props(words_path: Path, props_path: Path, skipped: list[int]) -> list[Frame]:
    """The release's separate files: ``*.words`` (one word per line) and ``*.props`` (target-verb
    column + argument columns), sentences separated by blank lines in both."""
    frames = []
    words_blocks = list(_blocks(words_path))
    props_blocks = list(_blocks(props_path))
    if not props_blocks:
        raise DataError(f"{props_path}: no sentences (empty file?)")
    if len(words_blocks) != len(props_blocks):
        raise DataError(f"{props_path}: {len(props_blocks)} sentences, but {words_path} has {len(words_blocks)}")
    for (_, wrows), (line, prows) in zip(words_blocks, props_blocks):
        if len(wrows) != len(prows):
            raise DataError(f"{props_path}:{line}: {len(prows)} lines, but the sentence in {words_path} has "
                            f"{len(wrows)} words")
        frames += props_frames([r[0] for r in wrows], prows, str(props_path), line, skipped)
    return frames


class SrlTask(TaggingTask):
    Options = LabelOptions
    labels_from_train = True
    count_unseen = True
    pair_field = "predicate"

    def read_frames(self, split: str, skipped: list[int]) -> list[Frame]:
        raise NotImplementedError

    def read_split(self, split):
        cached = getattr(self, "_frames", {})
        if split not in cached:
            skipped = [0, 0]
            frames = self.read_frames(split, skipped)
            if skipped[0]:
                log.warning("%s/%s: %d predicate column(s) without a (V*) span skipped", self.name, split, skipped[0])
            if skipped[1]:
                log.info("%s/%s: %d sentence(s) without a predicate give no example", self.name, split, skipped[1])
            if not frames:
                raise DataError(f"task {self.name}: the {split} split has no predicates")
            cached[split] = frames
            self._frames = cached
        return cached[split]

    def metrics(self, predictions, split):
        gold = {f["id"]: f["gold"] for f in self.features(split)}

        def no_verb(tags):  # the verb (and a continuation C-V of a split verb) is given, never scored
            return ["O" if t[2:] in ("V", "C-V") else t for t in tags]
        return entity_f1([no_verb(gold[p["id"]]) for p in predictions], [no_verb(p["tags"]) for p in predictions])


@TASKS.register("conll05")
class Conll05(SrlTask):
    """CoNLL-2005 SRL (PropBank) in the shared task's props format. ``data_dir`` holds, per split,
    one of: a combined column file (word first, other columns, then the target-verb column and one
    bracketed argument column per predicate, as the release's scripts paste them together); a pair
    ``<name>.words`` + ``<name>.props`` (optionally ``.gz``); or the release folder ``<name>/`` with
    ``words/*.words[.gz]`` and ``props/*.props[.gz]`` (paired by name). Names tried: train: ``train``,
    ``train.txt``, ``train-set``; dev: ``devel``, ``dev``, ``dev.txt``, ``devel-set``; test:
    ``test.wsj``, ``test``, ``test.txt``, ``test.wsj-set``. The Brown test set: ``task.test_file=<dir>/test.brown``.
    Roles A0-A5, AM-*, C-*, R-*, V."""

    source_kind = "any"  # a column file, a release folder or a .words/.props pair (source_exists)
    split_files = {"train": ("train", "train.txt", "train-set"),
                   "dev": ("devel", "dev", "dev.txt", "devel-set", "dev-set"),
                   "test": ("test.wsj", "test", "test.txt", "test.wsj-set", "test-set")}

    def source_exists(self, path: Path) -> bool:
        """A column file, a release folder, or ``<name>`` of a ``<name>.words``/``<name>.props`` pair."""
        return path.exists() or any((path.parent / f"{path.name}.props{gz}").is_file() for gz in ("", ".gz"))

    def missing_hint(self, split: str) -> str:
        return ", as a column file, a release folder or a .words/.props pair"

    def read_frames(self, split, skipped):
        path = self.split_source(split)
        if path.is_file():
            return read_conll05_columns(path, skipped)
        if not path.is_dir():
            words, props = (self._pair_file(path, kind) for kind in ("words", "props"))
            return read_words_props(words, props, skipped)
        props_files = sorted((path / "props").glob("*.props*"))
        if not props_files:
            raise DataError(f"{path}: no props/*.props[.gz] files (the CoNLL-2005 release layout)")
        frames = []
        for props in props_files:
            stem = props.name.split(".props")[0]
            words = sorted((path / "words").glob(f"{stem}.words*"))
            if not words:
                raise DataError(f"{props}: no matching {path / 'words' / stem}.words[.gz]")
            frames += read_words_props(words[0], props, skipped)
        return frames

    @staticmethod
    def _pair_file(base: Path, kind: str) -> Path:
        for gz in ("", ".gz"):
            p = base.parent / f"{base.name}.{kind}{gz}"
            if p.is_file():
                return p
        raise DataError(f"{base}.props: no matching {base.name}.{kind}[.gz]")


@TASKS.register("conll12")
class Conll12(SrlTask):
    """CoNLL-2012 SRL (OntoNotes 5.0 PropBank) from the ``*_gold_conll`` files, in the layout of the
    ``ontonotes`` task (``train/``, ``development/``, ``test/`` searched recursively): every
    predicate-argument column (after the NE column, before the coreference column) is one example.
    Roles ARG0-ARG5, ARGM-*, C-*, R-*, V."""

    split_files, source_kind, data_help = GOLD_CONLL_DIRS, "dir", GOLD_CONLL_HELP

    def read_frames(self, split, skipped):
        frames = []
        for sent in read_gold_conll_split(self, split):
            frames += frames_from_columns(sent.words, sent.arg_columns(), str(sent.path), sent.line, skipped)
        return frames

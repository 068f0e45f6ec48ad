"""Custom tasks without code: point a run config at your files and name the columns.

``custom_classification``: JSONL (one JSON object per line) or CSV/TSV (a header row) with a text,
an optional second text and a label (``task.text_column``, ``task.text_pair_column``,
``task.label_column``); [CLS] head, accuracy (+ macro-F1).
``custom_tagging``: CoNLL-style columns (``task.word_column``, ``task.tag_column``), BIO or IOB1
tags (normalised to IOB2), entity micro-F1 (seqeval).

Files: ``task.train_file`` / ``task.dev_file`` / ``task.test_file``, or ``task.data_dir`` holding
``train``/``dev``/``test`` with one of the extensions .jsonl, .json (JSON lines, or one JSON list),
.csv, .tsv (classification) or
.txt, .conll, .tsv, none (tagging). Labels: ``task.labels`` in that order, else every label of the
training split (with ``task.folds``: of every split), sorted (``O`` first for tagging); a dev/test
label outside that set is a one-line error naming file:line, and fewer than two labels is one too."""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from deepprompt.data.files import check_header, iter_jsonl
from deepprompt.errors import DataError
from deepprompt.fileio import load_json, read_text, text_lines
from deepprompt.metrics.classification import accuracy, macro_f1
from deepprompt.registry import TASKS
from deepprompt.tasks.base import Task, log
from deepprompt.tasks.readers import read_conll
from deepprompt.tasks.tagging import LabelOptions, TaggingTask, label_splits, labels_seen


@dataclass
class TaggingColumns(LabelOptions):
    word_column: int = 0
    """The column of the word in the CoNLL file (0-based; negative counts from the end)."""
    tag_column: int = -1
    """The column of the tag in the CoNLL file (0-based; negative counts from the end)."""


@dataclass
class ClassificationColumns(LabelOptions):
    text_column: str = "text"
    """The JSONL field / CSV column of the text."""
    text_pair_column: str | None = None
    """The field / column of the second text (sentence pairs); None = single text."""
    label_column: str = "label"
    """The field / column of the label."""


def _split_files(extensions: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """``<split><ext>`` under data_dir: the one extension that exists (two are refused)."""
    return {s: tuple(f"{s}{ext}" for ext in extensions) for s in ("train", "dev", "test")}


@TASKS.register("custom_tagging")
class CustomTagging(TaggingTask):
    """Tagging from your CoNLL-style column files (see the module docstring).

    Truncation: words past ``task.max_seq_length`` sub-words are predicted ``O`` (counted in the log)."""

    Options = TaggingColumns
    labels_from_train = True
    EXTENSIONS = (".txt", ".conll", ".tsv", "")
    split_files, source_kind, needs_files = _split_files(EXTENSIONS), "file", True

    def read_split(self, split):
        w, t = self.opts.word_column, self.opts.tag_column
        return read_conll(self.split_source(split), tag_col=t, word_col=w,
                          columns=f"a word in column {w} and a tag in column {t}")


@TASKS.register("custom_classification")
class CustomClassification(Task):
    """Sentence (or sentence-pair) classification from your JSONL/CSV/TSV files (see the module
    docstring). The test split needs labels too (it is scored).

    Truncation: text (+ pair) is cut to ``task.max_seq_length`` sub-words, the longer text first;
    the number of truncated examples is logged."""

    Options = ClassificationColumns
    head = "classification"
    main_metric = "accuracy"
    EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv")
    split_files, source_kind, needs_files = _split_files(EXTENSIONS), "file", True

    @property
    def labels(self) -> list[str]:
        if self.opts.labels:
            return list(self.opts.labels)
        if getattr(self, "_train_labels", None) is None:
            self._train_labels = labels_seen(self, {r["label"] for s in label_splits(self) for r, _ in self._rows(s)})
        return self._train_labels

    def cache_key(self) -> str:
        return super().cache_key() + json.dumps(self.labels)

    def _fields(self) -> list[str]:
        c = self.opts
        return [c.text_column, *([c.text_pair_column] if c.text_pair_column else []), c.label_column]

    def _rows(self, split: str) -> list[tuple[dict, str]]:
        """(record without id, "file:line") per example; a missing or empty field is an error."""
        cached = getattr(self, "_cache", {})
        if split in cached:
            return cached[split]
        path = self.split_source(split)
        rows = []
        for raw, where in (self._read_csv(path) if path.suffix in (".csv", ".tsv") else self._read_jsonl(path)):
            rec = self._record(raw, where)
            if rec is not None:
                rows.append((rec, where))
        if not rows:
            raise DataError(f"{path}: no examples (empty file?)")
        cached[split] = rows
        self._cache = cached
        return rows

    def _record(self, raw: dict, where: str) -> dict | None:
        """A row of the file as ``{"text", ("text_pair"), "label"}`` (None: a subclass skips it)."""
        c = self.opts
        rename = {c.text_column: "text", c.text_pair_column: "text_pair", c.label_column: "label"}
        rec = {}
        for field in self._fields():
            value = raw.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                raise DataError(f"{where}: missing field {field!r}")
            if isinstance(value, (dict, list)):
                raise DataError(f"{where}: field {field!r} must be a string or number, got {value!r}")
            rec[rename[field]] = str(value).lower() if isinstance(value, bool) else str(value)
        return rec

    @staticmethod
    def _read_jsonl(path: Path):
        """(object, "file:line") per line; a ``.json`` file holding one JSON list gives "file: example i"."""
        text = read_text(path) if path.suffix == ".json" else ""
        if text.lstrip().startswith("["):
            items = load_json(text, path)
            for i, obj in enumerate(items):
                if not isinstance(obj, dict):
                    raise DataError(f"{path}: example {i}: expected a JSON object, got {type(obj).__name__}")
                yield obj, f"{path}: example {i}"
            return
        for where, obj in iter_jsonl(path, allow_empty=True):  # emptiness is checked per split
            yield obj, where

    def _read_csv(self, path: Path):
        """(row as {column: cell}, "file:line" of the row's first line) per row after the header;
        blank lines are skipped (and counted in the line numbers), a quoted cell may span lines."""
        # decoded first (UTF-8, a byte-order mark dropped: Excel writes one, and it would otherwise
        # stick to the first column's name); csv wants the line ends untouched (newline=""). strict: a
        # cell that opens with a quote must close with one; lenient csv reads on to the next quote in
        # the file, joining the rows between into one cell without a word
        delimiter = "\t" if path.suffix == ".tsv" else ","
        reader = csv.reader(text_lines(path, newline=""), delimiter=delimiter, strict=True)
        header, end = None, 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                raise DataError(f"{path}:{end + 1}: not valid CSV ({e} on line {reader.line_num}; a cell that "
                                f"starts with a quote must end with one, and write a quote inside as \"\")") from None
            where, end = f"{path}:{end + 1}", reader.line_num  # the row runs from line end + 1 to line_num
            if not cells:
                continue
            if header is None:
                header = cells
                check_header(header, where)
                for field in self._fields():
                    if field not in header:
                        raise DataError(f"{where}: missing field {field!r} (columns: {', '.join(header)})")
                continue
            if len(cells) > len(header):
                raise DataError(f"{where}: more cells than the {len(header)} header columns")
            yield dict(zip(header, cells)), where

    def read_examples(self, split):
        label_set = set(self.labels)
        examples = []
        for idx, (rec, where) in enumerate(self._rows(split)):
            if rec["label"] not in label_set:
                seen = "task.labels" if self.opts.labels else "the training split"
                raise DataError(f"{where}: unknown label {rec['label']!r} (not in {seen}: {', '.join(self.labels)})")
            examples.append({"id": idx, **rec})
        return examples

    def encode(self, batch):
        label_id = {l: i for i, l in enumerate(self.labels)}
        pairs = batch.get("text_pair")
        enc = self.tokenizer(batch["text"], pairs, truncation=True, max_length=self.cfg.max_seq_length)
        out = {k: [list(v) for v in vals] for k, vals in enc.items()}
        out["truncated"] = [bool(e.overflowing) for e in enc.encodings]
        if "label" in batch:
            out.update(id=batch["id"], gold=batch["label"], labels=[label_id[l] for l in batch["label"]])
        return out

    def build_features(self, split):
        feats = super().build_features(split)
        cut = sum(feats.dataset["truncated"])
        if cut:
            log.warning("%s/%s: %d of %d examples are longer than max_seq_length=%d and were truncated",
                        self.name, split, cut, len(feats), self.cfg.max_seq_length)
        return feats

    def raw_features(self, record, where="input"):
        """``{"text": ..., "text_pair": ...}`` (the pair only when the task has one) -> a feature."""
        rec = {}
        for key in ("text", "text_pair") if self.opts.text_pair_column else ("text",):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise DataError(f"{where}: task {self.name} needs {key!r} (a non-empty string)")
            rec[key] = record[key]
        return [self.encode_one(rec)]

    def predict(self, logits, features):
        best = logits.argmax(-1).tolist()
        return [{"id": f["id"], "label": self.labels[b]} for b, f in zip(best, features)]

    def metrics(self, predictions, split):
        gold = {f["id"]: f["gold"] for f in self.features(split)}
        golds, preds = [gold[p["id"]] for p in predictions], [p["label"] for p in predictions]
        return {"accuracy": accuracy(golds, preds), "macro_f1": macro_f1(golds, preds)}

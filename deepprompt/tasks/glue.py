"""GLUE tasks used for ablations, from the official tsv release (``train.tsv``, ``dev.tsv``,
``test.tsv``; a header row names the columns; the released test files have no label column, so
only train and dev are used unless a test file carries labels). ``task.data_dir`` is the task's
folder (``SST-2``, ``MRPC``, ``QNLI``) or the GLUE root holding it.

==========  ==================================  ===========================  ==============
task        columns (input)                     truncation                   metrics
==========  ==================================  ===========================  ==============
sst2        sentence / label                    end of the sentence          acc
mrpc        #1 String [SEP] #2 String /         longest first                f1 (main), acc
            Quality
qnli        question [SEP] sentence / label     sentence only                acc
==========  ==================================  ===========================  ==============

``task.formulation=cloze``: sst2 ``sentence It was [MASK].`` (0 terrible, 1 great); mrpc
``#1 Question: #2? Answer: [MASK].`` (0 no, 1 yes); qnli ``sentence Question: question? Answer:
[MASK].`` (entailment yes, not_entailment no).

Fields are split on tabs with no quote processing (GLUE's sentences contain bare quotes).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from deepprompt.data.files import check_header
from deepprompt.errors import DataError
from deepprompt.fileio import text_lines
from deepprompt.metrics.classification import accuracy, f1
from deepprompt.registry import TASKS
from deepprompt.tasks.classification import MASK, PAIR, TEXT, ClassificationTask, label_index


def read_tsv(path: Path):
    """(``file:line``, {column: value}) per data row; the header row names the columns."""
    header = None
    for lineno, line in enumerate(text_lines(path), 1):  # (GLUE's MRPC files start with a byte-order mark)
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("\t")
        if header is None:
            check_header(fields, f"{path}:{lineno}")
            header = fields
            continue
        if len(fields) != len(header):
            raise DataError(f"{path}:{lineno}: expected {len(header)} tab-separated fields "
                            f"({', '.join(header)}), got {len(fields)}")
        yield f"{path}:{lineno}", dict(zip(header, fields))
    if header is None:
        raise DataError(f"{path}: no examples (empty file)")


class GlueTask(ClassificationTask):
    split_files = {"train": ("train.tsv",), "dev": ("dev.tsv",), "test": ("test.tsv",)}
    columns: ClassVar[tuple[str, ...]]
    """The text column(s): one, or two for pair tasks."""
    label_column: ClassVar[str] = "label"

    def read_rows(self, path):
        return read_tsv(path)

    def is_labelled(self, row):
        return self.label_column in row

    def parse(self, row, where, labelled):
        for col in (*self.columns, *((self.label_column,) if labelled else ())):
            if col not in row:
                raise DataError(f"{where}: missing field {col!r}")
        rec = {"text": row[self.columns[0]]}
        if self.pair:
            rec["text_pair"] = row[self.columns[1]]
        if labelled:
            rec["label"] = label_index(self, row[self.label_column], where)
        return [rec]


@TASKS.register("sst2")
class SST2(GlueTask):
    """SST-2 sentiment: ``sentence`` -> 0 (negative) / 1 (positive). Accuracy."""

    folder = "SST-2"
    columns = ("sentence",)
    pair = False
    label_names = ("0", "1")

    cloze_pattern = (TEXT, " It was", MASK, ".")
    verbalizers = ("terrible", "great")


@TASKS.register("mrpc")
class MRPC(GlueTask):
    """MRPC paraphrase: ``#1 String [SEP] #2 String`` -> ``Quality`` 0/1. F1 of class 1 (main) and
    accuracy, as GLUE reports them."""

    folder = "MRPC"
    columns = ("#1 String", "#2 String")
    label_column = "Quality"
    label_names = ("0", "1")
    main_metric = "f1"

    cloze_pattern = (TEXT, " Question:", PAIR, "? Answer:", MASK, ".")
    verbalizers = ("no", "yes")

    def score(self, gold, pred):
        return {"acc": accuracy(gold, pred), "f1": f1(gold, pred, positive="1")}


@TASKS.register("qnli")
class QNLI(GlueTask):
    """QNLI: does ``sentence`` answer ``question``? ``question [SEP] sentence``; only the sentence is
    truncated. Accuracy."""

    folder = "QNLI"
    columns = ("question", "sentence")
    label_names = ("entailment", "not_entailment")
    truncate = "text_pair"

    cloze_pattern = (PAIR, " Question:", TEXT, "? Answer:", MASK, ".")
    verbalizers = ("yes", "no")

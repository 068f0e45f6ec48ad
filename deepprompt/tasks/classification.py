"""Sentence(-pair) tasks read from per-split files (SuperGLUE jsonl, GLUE tsv): the shared machinery.

- ``FileTask``: one file per split in a data directory, read row by row (``read_rows``, the format)
  and turned into records by the task's ``parse`` (one row may give several records or none).
  Every error names ``file:line``. The ``test`` split is offered only when its file carries labels
  (the official SuperGLUE and GLUE test sets do not): ``splits`` is ``("train", "dev")`` otherwise.
- ``ClassificationTask``: the ``classification`` head on the first token; each feature is one text
  or text pair (``expand`` may turn one record into several, e.g. one per answer option), with a
  truncation policy that names the segment that may be cut.
  With ``task.formulation=cloze`` (tasks that define ``cloze_pattern`` and ``verbalizers``) the
  record is instead put into a pattern holding the tokenizer's mask token (``ClozePattern``) and
  the parameter-free ``cloze`` head scores one single-token verbalizer per label at the mask;
  labels, predictions and metrics are the same (the candidates are in label order).
- ``MultipleChoiceTask``: the ``multiple_choice`` head; one text pair per choice, features
  ``input_ids`` of shape [choices][tokens].

Every feature carries ``id`` (the record's position in its split) and ``sub`` (which of the
record's features it is), and predictions carry both, so metrics never depend on the order in
which ranks gather predictions.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from deepprompt.errors import ConfigError, DataError
from deepprompt.metrics.classification import accuracy
from deepprompt.tasks.base import TENSOR_KEYS, Task, log
from deepprompt.tasks.cloze import MASK, PAIR, TEXT, ClozePattern, verbalizer_id  # noqa: F401  (the tasks' patterns)
from deepprompt.tasks.readers import get_field  # noqa: F401  (the one field getter; superglue/glue use it)

_SEQ = ("input_ids", "attention_mask", "token_type_ids")
_STRATEGY = {"text": "only_first", "text_pair": "only_second", "longest": "longest_first"}


def label_text(value: Any) -> str:
    """A label as the file writes it, as a string: JSON true/false -> "true"/"false", 1 -> "1"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---------------------------------------------------------------------------------- tokenising
def encode_pairs(tokenizer, texts: list[str], pairs: list[str] | None, max_length: int,
                 truncate: str) -> tuple[dict[str, list], list[bool], list[bool]]:
    """Tokenise texts (or text pairs) to at most ``max_length`` tokens, special tokens included.

    ``truncate`` says what may be cut when a row is too long: ``"text_pair"`` (only the second
    segment, e.g. a passage after its question), ``"text"`` (only the first, e.g. a premise before
    its hypothesis) or ``"longest"`` (tokens off the longer segment first). A row whose protected
    segment alone leaves no room falls back to ``"longest"``. Returns (columns, truncated flag per
    row, fell-back flag per row)."""
    if truncate not in _STRATEGY:
        raise ValueError(f"truncate must be one of {sorted(_STRATEGY)}, got {truncate!r}")
    n = len(texts)
    special = tokenizer.num_special_tokens_to_add(pair=pairs is not None)
    len_a = [len(x) for x in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    len_b = [len(x) for x in tokenizer(pairs, add_special_tokens=False)["input_ids"]] if pairs is not None else [0] * n
    truncated = [a + b + special > max_length for a, b in zip(len_a, len_b)]
    strategy, fell_back = [], [False] * n
    for i, (a, b, cut) in enumerate(zip(len_a, len_b, truncated)):
        s = _STRATEGY[truncate] if pairs is not None else "longest_first"
        protected = b if truncate == "text" else a
        if cut and pairs is not None and truncate != "longest" and protected + special >= max_length:
            s, fell_back[i] = "longest_first", True
        strategy.append(s)
    columns: dict[str, list] = {}
    for s in dict.fromkeys(strategy):
        rows = [i for i in range(n) if strategy[i] == s]
        args = ([texts[i] for i in rows], [pairs[i] for i in rows] if pairs is not None else None)
        try:
            enc = tokenizer(*args, truncation=s, max_length=max_length)
        except Exception:  # a tokenizer whose pair length is not the sum of the parts: cut longest-first
            if s == "longest_first":
                raise
            enc = tokenizer(*args, truncation="longest_first", max_length=max_length)
            for i in rows:
                fell_back[i] = truncated[i]
        for key in _SEQ:
            if key in enc:
                col = columns.setdefault(key, [None] * n)
                for i, v in zip(rows, enc[key]):
                    col[i] = list(v)
    return columns, truncated, fell_back


# ------------------------------------------------------------------------------------ file tasks
class FileTask(Task):
    """A task read from one file per split under ``task.data_dir``."""

    source_kind = "file"
    truncate: ClassVar[str] = "longest"
    """Which segment ``encode_pairs`` may cut: text | text_pair | longest."""

    # -- format (SuperGLUE jsonl, GLUE tsv) and task (fields)
    def read_rows(self, path: Path) -> Iterator[tuple[str, dict]]:
        """(``file:line``, row) for every row of ``path``; raises on an empty file."""
        raise NotImplementedError

    def parse(self, row: dict, where: str, labelled: bool) -> list[dict]:
        """The records of one row (without ``id``); ``labelled=False`` for raw input."""
        raise NotImplementedError

    def is_labelled(self, row: dict) -> bool:
        """Whether a row of this task's format carries its gold label(s)."""
        return "label" in row

    @property
    def data_help(self) -> str:
        return f"the official {self.folder} folder with {', '.join(n for names in self.split_files.values() for n in names)}"

    @property
    def splits(self) -> tuple[str, ...]:
        """train and dev; test too when the test file exists and its first row carries a label. A
        ``task.test_file`` without labels is refused: it was asked for, and the test split is scored.
        A test file under data_dir that cannot be read (empty, malformed) gives no test split, and
        a warning that says why (a broken labelled test file would otherwise vanish unsaid)."""
        if "test" not in self.split_files:
            return ("train", "dev")
        explicit = self.explicit_file("test")
        path = explicit or (self.data_dir() / self.split_files["test"][0] if self.cfg.data_dir else None)
        if path is not None and path.is_file():
            try:
                _, first = next(iter(self.read_rows(path)), (None, None))
            except DataError as e:
                if explicit:
                    raise
                if not getattr(self, "_test_unread", False):  # said once: splits is asked for often
                    log.warning("%s: no test split: the test file cannot be read (%s)", self.name, e)
                    self._test_unread = True
                return ("train", "dev")
            if first is None and explicit:
                raise DataError(f"{explicit}: no examples (empty file)")
            if first is not None and self.is_labelled(first):
                return ("train", "dev", "test")
            if explicit:
                raise ConfigError(f"task.test_file: {explicit}: its first row has no label; the test split is "
                                  f"scored, so it needs labels (unset task.test_file to use train and dev only)")
        return ("train", "dev")

    def read_examples(self, split: str) -> list[dict]:
        path = self.split_source(split)
        records = []
        for where, row in self.read_rows(path):
            for rec in self.parse(row, where, labelled=True):
                records.append({"id": len(records), **rec})
        if not records:
            raise DataError(f"{path}: no examples")
        return records

    def raw_features(self, record: dict, where: str = "input") -> list[dict]:
        """A row in the task's official format (labels may be absent) -> its features: one, or one
        per answer option / candidate entity of each question (MultiRC, ReCoRD: ``id`` is the
        question's index in the row, ``sub`` the option's)."""
        recs = self.parse(record, where, labelled=False)
        if not recs:
            raise DataError(f"{where}: task {self.name}: the record holds no input")
        return self.encode_rows([{"id": i, **r} for i, r in enumerate(recs)])

    def build_features(self, split: str):
        """Logs the truncation from the features' own columns, so a cached split says it as well
        (``encode`` does not run then)."""
        feats = super().build_features(split)
        if "truncated" in feats.dataset.column_names:
            cut = sum(feats.dataset["truncated"])
            if cut:
                log.warning("%s/%s: %d of %d inputs are longer than task.max_seq_length=%d and were truncated "
                            "(%s)", self.name, split, cut, len(feats), self.cfg.max_seq_length,
                            self.truncation_policy())
        fell_back = sum(feats.dataset["fell_back"]) if "fell_back" in feats.dataset.column_names else 0
        if fell_back:
            log.warning("%s/%s: %d input(s) too long even without the segment that is normally cut; those "
                        "were truncated longest-first", self.name, split, fell_back)
        return feats

    def truncation_policy(self) -> str:
        return {"text": "the first segment is cut, never the second",
                "text_pair": "the second segment is cut, never the first",
                "longest": "tokens come off the longer segment first"}[self.truncate]


def label_index(task: Task, value: Any, where: str) -> int:
    """The position of a file's label in ``task.labels``, or a one-line error."""
    text = label_text(value)
    if text not in task.labels:
        raise DataError(f"{where}: unknown label {value!r} for task {task.name} (known: {', '.join(task.labels)})")
    return task.labels.index(text)


# ------------------------------------------------------------------------------- classification
class ClassificationTask(FileTask):
    """Records hold ``text`` (and ``text_pair`` for pair tasks) and ``label`` (an index into
    ``labels``); the metric is accuracy unless ``score`` says otherwise."""

    main_metric = "acc"
    label_names: ClassVar[tuple[str, ...]]
    pair: ClassVar[bool] = True
    cloze_pattern: ClassVar[tuple[str, ...] | None] = None
    """The cloze formulation's input: ``TEXT``, ``PAIR``, ``MASK`` and literal strings; None = the
    task has no cloze formulation."""
    verbalizers: ClassVar[tuple[str, ...] | None] = None
    """The cloze formulation's answer word per label (``label_names`` order), one token each."""
    tensor_keys = (*TENSOR_KEYS, "mask_positions", "candidate_ids")

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self.cloze = ClozePattern(self.name, tokenizer, self.cloze_pattern, self.verbalizers, self.truncate) \
            if cfg.formulation == "cloze" else None

    @property
    def formulations(self) -> tuple[str, ...]:
        return ("classification", "cloze") if self.cloze_pattern else ("classification",)

    @property
    def head(self) -> str:
        """``classification`` (first token), or the parameter-free ``cloze`` head."""
        return "cloze" if self.cfg.formulation == "cloze" else "classification"

    @property
    def labels(self) -> list[str]:
        return list(self.label_names)

    def expand(self, batch: dict[str, list]) -> dict[str, list]:
        """Records (column-wise) -> one row per feature: ``text``, ``text_pair`` (pair tasks),
        ``label`` (when labelled), ``id``, ``sub`` and any extra columns the metric needs."""
        rows = {"id": batch["id"], "sub": [0] * len(batch["id"]), "text": batch["text"]}
        if self.pair:
            rows["text_pair"] = batch["text_pair"]
        if "label" in batch:
            rows["label"] = batch["label"]
        return rows

    def encode(self, batch):
        rows = self.expand(batch)
        texts, pairs = rows.pop("text"), rows.pop("text_pair", None)
        if self.cloze is not None:
            out, truncated = self._encode_cloze(texts, pairs)
        else:
            out, truncated, fell_back = encode_pairs(self.tokenizer, texts, pairs, self.cfg.max_seq_length,
                                                     self.truncate)
            out["fell_back"] = fell_back
        if "label" in rows:
            out["labels"] = rows.pop("label")
        out["truncated"] = truncated
        out.update(rows)
        return out

    def _encode_cloze(self, texts: list[str], pairs: list[str] | None) -> tuple[dict[str, list], list[bool]]:
        tok = self.tokenizer
        a = tok(texts, add_special_tokens=False)["input_ids"]
        b = tok(pairs, add_special_tokens=False)["input_ids"] if pairs is not None else [[] for _ in texts]
        out: dict[str, list] = {"input_ids": [], "mask_positions": []}
        truncated = []
        for x, y in zip(a, b):
            ids, at, cut = self.cloze.encode(list(x), list(y), self.cfg.max_seq_length)
            out["input_ids"].append(ids)
            out["mask_positions"].append(at)
            truncated.append(cut)
        out["attention_mask"] = [[1] * len(ids) for ids in out["input_ids"]]
        if "token_type_ids" in tok.model_input_names:
            out["token_type_ids"] = [[0] * len(ids) for ids in out["input_ids"]]
        out["candidate_ids"] = [list(self.cloze.candidate_ids)] * len(texts)
        return out, truncated

    def predict(self, logits, features):
        best = logits.argmax(-1).tolist()
        out = []
        for row, b, feat in zip(logits.tolist(), best, features):
            pred = {"id": feat["id"], "sub": feat["sub"], "label": self.labels[b]}
            if len(row) == 2:  # binary: the margin of the second class (ranking candidates, thresholds)
                pred["score"] = row[1] - row[0]
            out.append(pred)
        return out

    def gold(self, split: str) -> dict[tuple[int, int], int]:
        ds = self.features(split).dataset
        return {(i, s): l for i, s, l in zip(ds["id"], ds["sub"], ds["labels"])}

    def metrics(self, predictions, split):
        gold = self.gold(split)
        g = [self.labels[gold[(p["id"], p["sub"])]] for p in predictions]
        return self.score(g, [p["label"] for p in predictions])

    def score(self, gold: list[str], pred: list[str]) -> dict[str, float]:
        return {"acc": accuracy(gold, pred)}


class MultipleChoiceTask(FileTask):
    """Records hold ``choices`` (pairs of [text, text_pair], one per choice) and ``label`` (the
    right choice's index); accuracy."""

    head = "multiple_choice"
    main_metric = "acc"
    num_choices: ClassVar[int]

    @property
    def labels(self) -> list[str]:
        return [f"choice{i + 1}" for i in range(self.num_choices)]

    def encode(self, batch):
        flat_a = [a for choices in batch["choices"] for a, _ in choices]
        flat_b = [b for choices in batch["choices"] for _, b in choices]
        enc, truncated, fell_back = encode_pairs(self.tokenizer, flat_a, flat_b, self.cfg.max_seq_length, self.truncate)
        c = self.num_choices
        out = {k: [v[i * c:(i + 1) * c] for i in range(len(batch["id"]))] for k, v in enc.items()}
        out["truncated"] = [any(truncated[i * c:(i + 1) * c]) for i in range(len(batch["id"]))]
        out["fell_back"] = [any(fell_back[i * c:(i + 1) * c]) for i in range(len(batch["id"]))]
        out["id"], out["sub"] = batch["id"], [0] * len(batch["id"])
        if "label" in batch:
            out["labels"] = batch["label"]
        return out

    def collate(self, features):
        """[B][C][L] token lists -> [B, C, Lmax] tensors (each choice right-padded)."""
        pads = {"input_ids": self.tokenizer.pad_token_id or 0}
        width = max(len(choice) for f in features for choice in f["input_ids"])
        batch = {}
        for key in _SEQ:
            if key in features[0]:
                batch[key] = torch.tensor([[choice + [pads.get(key, 0)] * (width - len(choice)) for choice in f[key]]
                                           for f in features], dtype=torch.long)
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=torch.long)
        return batch

    def predict(self, logits, features):
        return [{"id": f["id"], "sub": 0, "label": self.labels[b]}
                for b, f in zip(logits.argmax(-1).tolist(), features)]

    def metrics(self, predictions, split):
        ds = self.features(split).dataset
        gold = dict(zip(ds["id"], ds["labels"]))
        return {"acc": accuracy([self.labels[gold[p["id"]]] for p in predictions], [p["label"] for p in predictions])}


def mark_span(text: str, start: int, end: int, marker: str = "*") -> str:
    """``text`` with ``text[start:end]`` wrapped in ``marker`` on both sides."""
    return f"{text[:start]}{marker}{text[start:end]}{marker}{text[end:]}"


_EDGE_PUNCT = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


def _norm_word(word: str) -> str:
    return re.sub(r"\W", "", word.lower())


def mark_words(words: list[str], index: int, span: str, left: str, right: str, where: str, key: str) -> list[str]:
    """Wrap the words of ``span`` found at word ``index`` (or, if the file's index is off, at the
    nearest place where the span's words occur) in ``left``/``right`` markers, outside any
    punctuation glued to the first/last word: ``himself,`` -> ``*himself*,``."""
    target = [_norm_word(w) for w in span.split()]
    n = len(target)
    if not n:
        raise DataError(f"{where}: field {key!r} is empty")
    hits = [i for i in range(len(words) - n + 1) if [_norm_word(w) for w in words[i:i + n]] == target]
    if not hits:
        raise DataError(f"{where}: {key} {span!r} does not occur in the text (word index {index})")
    i = min(hits, key=lambda h: abs(h - index))
    out = list(words)
    lead = _EDGE_PUNCT.match(out[i]).group(1)
    out[i] = f"{lead}{left}{out[i][len(lead):]}"
    last = out[i + n - 1]
    trail = _EDGE_PUNCT.match(last).group(3)
    out[i + n - 1] = f"{last[:len(last) - len(trail)]}{right}{trail}"
    return out

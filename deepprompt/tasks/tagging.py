"""``TaggingTask``: per-word BIO tags on the first sub-word of each word, entity-level micro-F1
(seqeval); the base of the NER tasks (``ner.py``), SRL (``srl.py``) and ``custom_tagging``."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar

from deepprompt.errors import ConfigError, DataError
from deepprompt.metrics.seqeval_f1 import entity_f1
from deepprompt.tasks.base import PAD_LABEL, Task, log
from deepprompt.tasks.readers import GoldConllSentence, Sentence, gold_conll_files, iob1_to_iob2, read_gold_conll


BIO_TAG = re.compile(r"O|[BIES]-\S+")
"""A tag the tasks read: IOB2, IOB1 (normalised to IOB2 by ``iob1_to_iob2``) or BIOES (kept as it
is: seqeval's chunking reads ``E-``/``S-``, and strict mode picks its IOBES scheme for them)."""


def word_where(where: str, j: int) -> str:
    """Where word ``j`` of a sentence found at ``where`` is: ``file:line`` + j in a column file (one
    word per line), else ``where`` and the word's index (a JSON example)."""
    path, _, line = where.rpartition(":")
    return f"{path}:{int(line) + j}" if line.isdigit() else f"{where}: word {j}"


def bio_tags(sent: Sentence) -> list[str]:
    """The sentence's tags, IOB1 normalised to IOB2. A tag of no scheme the metric reads (``PER``,
    ``b-per``, BILOU's ``U-PER``) is a one-line error naming its line: it would train as a label of
    its own, but seqeval finds no entity in it, so the F1 would be 0 without a word said."""
    for j, t in enumerate(sent.tags):
        if not BIO_TAG.fullmatch(t):
            raise DataError(f"{word_where(sent.where, j)}: tag {t!r} is not BIO or BIOES (expected O, or B-, I-, "
                            f"E-, S- and the type)")
    return iob1_to_iob2(sent.tags)


def label_splits(task: Task) -> tuple[str, ...]:
    """Where a label set read from the data comes from: train; with ``task.folds`` every split, as
    each fold trains on parts of all three (a tag only dev had was trained as no label at all)."""
    return ("train", "dev", "test") if task.cfg.folds else ("train",)


def labels_seen(task: Task, seen: set[str], first: tuple[str, ...] = ()) -> list[str]:
    """The label set read from the data: ``first``, then the rest of ``seen`` sorted. Fewer than
    two is one line: a head of one class learns nothing and scores everything right."""
    labels = [*first, *sorted(seen - set(first))]
    if len(labels) < 2:
        where = "the training split" if label_splits(task) == ("train",) else "the pooled splits (task.folds)"
        held = f"only the label {labels[0]!r}" if labels else "no labels"
        raise DataError(f"task {task.name}: {where} holds {held}; a classifier needs at least two (or set task.labels)")
    return labels


@dataclass
class LabelOptions:
    labels: list[str] | None = None
    """The label set, in this order; None = every label of the training split (with task.folds: of
    every split; sorted, ``O`` first for tagging)."""

    def check(self, cfg, prefix: str) -> None:
        if self.labels is None:
            return
        twice = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if twice:
            raise ConfigError(f"{prefix}labels: {twice[0]!r} is listed twice (each label is one output of the head)")
        if len(self.labels) < 2:
            raise ConfigError(f"{prefix}labels: a classifier needs at least two labels, got {self.labels} (or null for "
                              f"those of the data)")


class TaggingTask(Task):
    """Per-word BIO tags. The label set is fixed (``entity_types``) or, with ``labels_from_train``,
    ``task.labels`` if given, else ``O`` + every tag of the training split (sorted). A tag outside a
    fixed set (or, by default, never seen in training) is a one-line error naming file:line; with
    ``count_unseen`` (SRL) such a dev/test tag cannot be predicted but is kept in the gold sequence
    (the metric counts it as missed), gets no training label, and the number of such words is logged."""

    head = "token"
    main_metric = "f1"
    entity_types: ClassVar[tuple[str, ...]] = ()
    source_kind = "file"
    labels_from_train: ClassVar[bool] = False
    count_unseen: ClassVar[bool] = False
    """With labels from train: a dev/test tag never seen in training is counted (not an error)."""
    pair_field: ClassVar[str | None] = None
    """A record field of words encoded as the second segment of a text pair (after the tokenizer's
    own separator); it gets no labels and is never truncated (SRL: the predicate)."""

    @property
    def labels(self) -> list[str]:
        if not self.labels_from_train:
            return ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]
        if self.given_labels:
            return list(self.given_labels)
        if getattr(self, "_train_labels", None) is None:
            seen = {t for s in label_splits(self) for sent in self.read_split(s) for t in bio_tags(sent)}
            self._train_labels = labels_seen(self, seen | {"O"}, first=("O",))
        return self._train_labels

    @property
    def given_labels(self) -> list[str] | None:
        """``task.labels`` of a family that has the key (``LabelOptions``), else None."""
        return getattr(self.opts, "labels", None)

    def cache_key(self) -> str:  # the label ids depend on the label set, which may come from train
        return super().cache_key() + json.dumps(self.labels)

    def read_split(self, split: str) -> list[Sentence]:
        raise NotImplementedError

    def read_examples(self, split):
        label_id = {l: i for i, l in enumerate(self.labels)}
        examples, unseen = [], 0
        for idx, sent in enumerate(self.read_split(split)):
            tags = bio_tags(sent)
            for j, t in enumerate(tags):
                if t not in label_id:
                    if self.count_unseen and split != "train" and not self.given_labels:
                        unseen += 1
                        continue
                    raise DataError(f"{word_where(sent.where, j)}: unknown label {t!r} for task {self.name} "
                                    f"(known: {', '.join(self.labels)})")
            record = {"id": idx, "words": sent.words, "tags": tags}
            if self.pair_field:
                record[self.pair_field] = getattr(sent, self.pair_field)
            examples.append(record)
        if unseen:
            log.warning("%s/%s: %d words carry tags never seen in training; they stay in the gold sequences "
                        "(scored as missed) but cannot be predicted", self.name, split, unseen)
        return examples

    def build_features(self, split):
        self.require_fast_tokenizer("word alignment")
        feats = super().build_features(split)
        truncated = sum(f["num_words"] - f["num_labelled"] for f in feats)
        if truncated:
            log.warning("%s/%s: %d words fall beyond max_seq_length=%d; they are scored as predicted 'O'",
                        self.name, split, truncated, self.cfg.max_seq_length)
        return feats

    def encode(self, batch):
        label_id = {l: i for i, l in enumerate(self.labels)}
        pairs = batch.get(self.pair_field) if self.pair_field else None
        if pairs is None:
            enc = self.tokenizer(batch["words"], is_split_into_words=True, truncation=True,
                                 max_length=self.cfg.max_seq_length)
        else:
            enc = self.tokenizer(batch["words"], pairs, is_split_into_words=True, truncation="only_first",
                                 max_length=self.cfg.max_seq_length)
        out = {k: [list(v) for v in vals] for k, vals in enc.items()}
        out.update(word_ids=[], num_words=[len(w) for w in batch["words"]])
        if pairs is not None:
            out[self.pair_field] = pairs
        tags_batch = batch.get("tags")
        if tags_batch is not None:
            out.update(labels=[], gold=tags_batch, id=batch["id"], num_labelled=[])
        for i in range(len(batch["words"])):
            word_ids = enc.word_ids(i)
            if pairs is not None:  # only the first segment's words are tagged
                word_ids = [w if s == 0 else None for w, s in zip(word_ids, enc.sequence_ids(i))]
            out["word_ids"].append(word_ids)
            if tags_batch is None:
                continue
            labels, seen = [], set()
            for w in word_ids:
                if w is None or w in seen:
                    labels.append(PAD_LABEL)
                else:
                    seen.add(w)
                    labels.append(label_id.get(tags_batch[i][w], PAD_LABEL))
            out["labels"].append(labels)
            out["num_labelled"].append(len(seen))
        return out

    def raw_features(self, record, where="input"):
        """``{"words": [...]}`` or ``{"text": "..."}`` (split on whitespace) -> a feature without labels."""
        self.require_fast_tokenizer("word alignment")
        if "words" in record and "text" in record:  # one would be ignored without a word
            raise DataError(f"{where}: task {self.name}: give \"words\" or \"text\", not both")
        words = record.get("words")
        if words is None and isinstance(record.get("text"), str):
            words = record["text"].split()
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError(f"{where}: task {self.name} needs \"words\" (a non-empty list of non-empty strings) "
                            f"or \"text\" (a string with at least one word)")
        rec = {"words": words}
        if self.pair_field:
            pair = record.get(self.pair_field)
            pair = pair.split() if isinstance(pair, str) else pair
            if not isinstance(pair, list) or not pair or not all(isinstance(w, str) and w.strip() for w in pair):
                raise DataError(f"{where}: task {self.name} needs \"{self.pair_field}\" (a non-empty string or "
                                f"list of words)")
            rec[self.pair_field] = pair
        feat = self.encode_one(rec)
        feat["words"] = words
        return [feat]

    def cut_effect(self):
        return f"their words past task.max_seq_length={self.cfg.max_seq_length} tokens are tagged 'O'"

    def input_cut(self, feature):
        return len({w for w in feature["word_ids"] if w is not None}) < feature["num_words"]

    def predict(self, logits, features):
        best = logits.argmax(-1).tolist()
        out = []
        for row, feat in zip(best, features):
            tags = ["O"] * feat["num_words"]
            seen = set()
            for pos, w in enumerate(feat["word_ids"]):
                if w is not None and w not in seen:
                    seen.add(w)
                    tags[w] = self.labels[row[pos]]
            out.append({"id": feat["id"], "tags": tags})
        return out

    def metrics(self, predictions, split):
        gold = {f["id"]: f["gold"] for f in self.features(split)}
        return entity_f1([gold[p["id"]] for p in predictions], [p["tags"] for p in predictions])


GOLD_CONLL_DIRS = {"train": ("train",), "dev": ("development", "dev"), "test": ("test",)}
"""The split directories of the CoNLL-2012 layout (ontonotes, conll12: ``split_files`` with
``source_kind = "dir"``)."""
GOLD_CONLL_HELP = "the CoNLL-2012 layout: train/, development/, test/ with *_gold_conll files"


def read_gold_conll_split(task: Task, split: str) -> list[GoldConllSentence]:
    """Every sentence of a split in the CoNLL-2012 layout (see ``Ontonotes``): one ``*_gold_conll``
    file, or every one under the split's directory."""
    path = task.split_source(split)
    files = [path] if path.is_file() else gold_conll_files(path)
    sentences = [s for f in files for s in read_gold_conll(f)]
    if not sentences:
        raise DataError(f"{files[0] if len(files) == 1 else files[0].parent}: no sentences (empty file?)")
    return sentences

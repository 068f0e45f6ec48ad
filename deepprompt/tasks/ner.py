"""Named-entity recognition from CoNLL-style column files: per-token BIO tags, labels on the first
sub-word of each word, entity-level micro-F1 (seqeval)."""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from deepprompt import assets
from deepprompt.errors import ConfigError, DataError
from deepprompt.metrics.seqeval_f1 import entity_f1
from deepprompt.registry import TASKS
from deepprompt.tasks.base import PAD_LABEL, Task, log


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    where: str  # "file:line" of the sentence's first token


def read_conll(path: Path, tag_col: int = -1) -> list[Sentence]:
    """Whitespace- (or tab-) separated columns, word first, tag in ``tag_col``; blank lines (also
    lines of only whitespace) end a sentence; ``-DOCSTART-`` lines are skipped."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    sentences, words, tags, start = [], [], [], 0
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            cols = line.split()
            if not cols or cols[0] == "-DOCSTART-":
                if words:
                    sentences.append(Sentence(words, tags, f"{path}:{start}"))
                words, tags = [], []
                continue
            if len(cols) < 2:
                raise DataError(f"{path}:{lineno}: expected a word and a tag, got {line.strip()!r}")
            if not words:
                start = lineno
            words.append(cols[0])
            tags.append(cols[tag_col])
    if words:
        sentences.append(Sentence(words, tags, f"{path}:{start}"))
    if not sentences:
        raise DataError(f"{path}: no sentences (empty file?)")
    return sentences


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


class TaggingTask(Task):
    head = "token"
    main_metric = "f1"
    entity_types: ClassVar[tuple[str, ...]] = ()
    default_asset: ClassVar[str | None] = None

    @property
    def labels(self) -> list[str]:
        return ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]

    def data_dir(self) -> Path:
        if self.cfg.data_dir:
            path = Path(self.cfg.data_dir)
            if not path.exists():
                raise ConfigError(f"task.data_dir: {path} does not exist")
            return path
        if self.default_asset is None:
            raise ConfigError(f"task.data_dir: task {self.name!r} needs a data directory")
        return assets.require_asset(self.default_asset, "task.data_dir")

    def read_split(self, split: str) -> list[Sentence]:
        raise NotImplementedError

    def read_examples(self, split):
        label_id = {l: i for i, l in enumerate(self.labels)}
        examples = []
        for idx, sent in enumerate(self.read_split(split)):
            tags = iob1_to_iob2(sent.tags)
            for j, t in enumerate(tags):
                if t not in label_id:
                    path, line = sent.where.rsplit(":", 1)
                    raise DataError(f"{path}:{int(line) + j}: unknown label {t!r} for task {self.name} "
                                    f"(known: {', '.join(self.labels)})")
            examples.append({"id": idx, "words": sent.words, "tags": tags})
        return examples

    def build_features(self, split):
        self._require_fast()
        feats = super().build_features(split)
        truncated = sum(f["num_words"] - f["num_labelled"] for f in feats)
        if truncated:
            log.warning("%s/%s: %d words fall beyond max_seq_length=%d; they are scored as predicted 'O'",
                        self.name, split, truncated, self.cfg.max_seq_length)
        return feats

    def encode(self, batch):
        label_id = {l: i for i, l in enumerate(self.labels)}
        enc = self.tokenizer(batch["words"], is_split_into_words=True, truncation=True,
                             max_length=self.cfg.max_seq_length)
        out = {k: [list(v) for v in vals] for k, vals in enc.items()}
        out.update(word_ids=[], num_words=[len(w) for w in batch["words"]])
        tags_batch = batch.get("tags")
        if tags_batch is not None:
            out.update(labels=[], gold=tags_batch, id=batch["id"], num_labelled=[])
        for i in range(len(batch["words"])):
            word_ids = enc.word_ids(i)
            out["word_ids"].append(word_ids)
            if tags_batch is None:
                continue
            labels, seen = [], set()
            for w in word_ids:
                if w is None or w in seen:
                    labels.append(PAD_LABEL)
                else:
                    seen.add(w)
                    labels.append(label_id[tags_batch[i][w]])
            out["labels"].append(labels)
            out["num_labelled"].append(len(seen))
        return out

    def _require_fast(self):
        if not getattr(self.tokenizer, "is_fast", False):
            raise ConfigError("model.path: token tasks need a fast tokenizer (tokenizer.json) for word alignment")

    def raw_features(self, record, where="input"):
        """``{"words": [...]}`` or ``{"text": "..."}`` (split on whitespace) -> a feature without labels."""
        self._require_fast()
        words = record.get("words")
        if words is None and isinstance(record.get("text"), str):
            words = record["text"].split()
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise DataError(f"{where}: task {self.name} needs \"words\" (a non-empty list of non-empty strings) "
                            f"or \"text\" (a string with at least one word)")
        feat = self.encode_one({"words": words})
        feat["words"] = words
        return feat

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


@TASKS.register("wnut16")
class Wnut16(TaggingTask):
    """WNUT-16 Twitter NER. ``data_dir`` holds the official ``train``/``dev``/``test`` files (any of
    the names train, train.txt, train.conll ...), or one file ``ner.txt`` (the released training
    data, as in the ``wnut16`` asset) that is split deterministically: shuffled with
    ``random.Random(16)``, then 80 % train / 10 % dev / 10 % test."""

    entity_types = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person",
                    "product", "sportsteam", "tvshow")
    default_asset = "wnut16"
    SPLIT_SEED = 16

    def read_split(self, split):
        root = self.data_dir()
        if root.is_file():
            return self._split_single(read_conll(root), split)
        for name in (split, f"{split}.txt", f"{split}.conll", f"{split}.tsv"):
            if (root / name).is_file():
                return read_conll(root / name)
        if (root / "ner.txt").is_file():
            return self._split_single(read_conll(root / "ner.txt"), split)
        raise ConfigError(f"task.data_dir: {root} has neither {split}[.txt|.conll|.tsv] nor ner.txt")

    def _split_single(self, sentences, split):
        order = list(range(len(sentences)))
        random.Random(self.SPLIT_SEED).shuffle(order)
        n_hold = round(0.1 * len(order))
        parts = {"test": order[:n_hold], "dev": order[n_hold:2 * n_hold], "train": order[2 * n_hold:]}
        return [sentences[i] for i in sorted(parts[split])]

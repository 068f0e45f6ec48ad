"""Named-entity recognition (wnut16, conll03, ontonotes, conll04): per-word BIO tags, labels on the
first sub-word of each word, entity-level micro-F1 (seqeval); and the CoNLL-family readers the SRL
and custom tasks share (column files, CoNLL-2012 ``*_gold_conll``, the bracket notation).
Every task's files, metric and truncation policy: docs/tasks.md."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from deepprompt import assets
from deepprompt.errors import ConfigError, DataError
from deepprompt.fileio import read_text, text_lines
from deepprompt.metrics.seqeval_f1 import entity_f1
from deepprompt.registry import TASKS
from deepprompt.tasks.base import PAD_LABEL, Task, log


@dataclass
class Sentence:
    words: list[str]
    tags: list[str]
    where: str  # "file:line" of the sentence's first token


def read_conll(path: Path, tag_col: int = -1, word_col: int = 0, min_cols: int = 2,
               columns: str = "a word and a tag") -> list[Sentence]:
    """Whitespace- (or tab-) separated columns, the word in ``word_col``, the tag in ``tag_col``;
    blank lines (also lines of only whitespace) end a sentence; ``-DOCSTART-`` lines are skipped.
    A line with fewer than ``min_cols`` columns (described by ``columns``) is a one-line error."""
    needed = max(min_cols, *(c + 1 if c >= 0 else -c for c in (tag_col, word_col)))
    sentences, words, tags, start = [], [], [], 0
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
            start = lineno
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


class TaggingTask(Task):
    """Per-word BIO tags. The label set is fixed (``entity_types``) or, with ``labels_from_train``,
    ``task.labels`` if given, else ``O`` + every tag of the training split (sorted). A tag outside a
    fixed set (or, by default, never seen in training) is a one-line error naming file:line; with
    ``count_unseen`` (SRL) such a dev/test tag cannot be predicted but is kept in the gold sequence
    (the metric counts it as missed), gets no training label, and the number of such words is logged."""

    head = "token"
    main_metric = "f1"
    entity_types: ClassVar[tuple[str, ...]] = ()
    default_asset: ClassVar[str | None] = None
    labels_from_train: ClassVar[bool] = False
    count_unseen: ClassVar[bool] = False
    """With labels from train: a dev/test tag never seen in training is counted (not an error)."""
    pair_field: ClassVar[str | None] = None
    """A record field of words encoded as the second segment of a text pair (after the tokenizer's
    own separator); it gets no labels and is never truncated (SRL: the predicate)."""
    split_files: ClassVar[dict[str, tuple[str, ...]]] = {}
    """Candidate file names per split under data_dir (the first that exists is read)."""

    @property
    def labels(self) -> list[str]:
        if not self.labels_from_train:
            return ["O"] + [f"{p}-{t}" for t in self.entity_types for p in ("B", "I")]
        if self.cfg.labels:
            return list(self.cfg.labels)
        if getattr(self, "_train_labels", None) is None:
            seen = {t for sent in self.read_split("train") for t in iob1_to_iob2(sent.tags)}
            self._train_labels = ["O"] + sorted(seen - {"O"})
        return self._train_labels

    def cache_key(self) -> str:  # the label ids depend on the label set, which may come from train
        return super().cache_key() + json.dumps(self.labels)

    def data_dir(self) -> Path:
        if self.cfg.data_dir:
            path = Path(self.cfg.data_dir)
            if not path.exists():
                raise ConfigError(f"task.data_dir: {path} does not exist")
            return path
        if self.default_asset is None:
            raise ConfigError(f"task.data_dir: task {self.name!r} needs a data directory")
        return assets.require_asset(self.default_asset, "task.data_dir")

    def default_source(self, split: str) -> Path:
        """The first of ``split_files[split]`` under data_dir."""
        root = self.data_dir()
        names = self.split_files.get(split, (split,))
        for name in names:
            if (root / name).exists():
                return root / name
        raise ConfigError(f"task.data_dir: {root} has no {split} file (looked for {', '.join(names)}; "
                          f"or set task.{split}_file)")

    def read_split(self, split: str) -> list[Sentence]:
        raise NotImplementedError

    def read_examples(self, split):
        label_id = {l: i for i, l in enumerate(self.labels)}
        examples, unseen = [], 0
        for idx, sent in enumerate(self.read_split(split)):
            tags = iob1_to_iob2(sent.tags)
            for j, t in enumerate(tags):
                if t not in label_id:
                    if self.count_unseen and split != "train" and not self.cfg.labels:
                        unseen += 1
                        continue
                    path, line = sent.where.rsplit(":", 1)
                    raise DataError(f"{path}:{int(line) + j}: unknown label {t!r} for task {self.name} "
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
        self._require_fast()
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

    SINGLE_FILE = "ner.txt"

    def default_source(self, split):
        root = self.data_dir()
        if root.is_file():
            return root
        for name in (split, f"{split}.txt", f"{split}.conll", f"{split}.tsv", self.SINGLE_FILE):
            if (root / name).is_file():
                return root / name
        raise ConfigError(f"task.data_dir: {root} has neither {split}[.txt|.conll|.tsv] nor {self.SINGLE_FILE} "
                          f"(or set task.{split}_file)")

    def read_split(self, split):
        path = self.split_source(split)
        sentences = read_conll(path)
        # one file for all three splits (the released ner.txt, or data_dir naming a file): split it
        shared = not getattr(self.cfg, f"{split}_file") and (path.name == self.SINGLE_FILE or path == self.data_dir())
        return self._split_single(sentences, split) if shared else sentences

    def _split_single(self, sentences, split):
        order = list(range(len(sentences)))
        random.Random(self.SPLIT_SEED).shuffle(order)
        n_hold = round(0.1 * len(order))
        parts = {"test": order[:n_hold], "dev": order[n_hold:2 * n_hold], "train": order[2 * n_hold:]}
        return [sentences[i] for i in sorted(parts[split])]


@TASKS.register("conll03")
class Conll03(TaggingTask):
    """CoNLL-2003 English NER. ``data_dir`` holds the official release, ``eng.train`` / ``eng.testa``
    (dev) / ``eng.testb`` (test), or the common renaming ``train.txt`` / ``valid.txt`` (or
    ``dev.txt``) / ``test.txt``: four space-separated columns ``word POS chunk NER`` per line,
    ``-DOCSTART- -X- -X- O`` document lines, blank lines between sentences. The official files are
    IOB1 (``I-`` starts an entity, ``B-`` only between two adjacent entities of one type); both IOB1
    and IOB2 are read and normalised to IOB2. Types PER, LOC, ORG, MISC.

    Truncation: a sentence is cut at ``task.max_seq_length`` sub-words; the words beyond are
    predicted ``O`` (so their entities count as missed) and counted in the log."""

    entity_types = ("PER", "LOC", "ORG", "MISC")
    split_files = {"train": ("eng.train", "train.txt", "train"),
                   "dev": ("eng.testa", "valid.txt", "dev.txt", "dev"),
                   "test": ("eng.testb", "test.txt", "test")}

    def read_split(self, split):
        return read_conll(self.split_source(split), tag_col=3, min_cols=4, columns="4 columns (word POS chunk NER)")


@TASKS.register("ontonotes")
class Ontonotes(TaggingTask):
    """OntoNotes 5.0 English NER from the CoNLL-2012 release: ``data_dir`` has ``train/``,
    ``development/`` (or ``dev/``) and ``test/``, each searched recursively for ``*_gold_conll``
    files (e.g. ``conll-2012/v4/data``; Arabic/Chinese folders are skipped and counted). The
    bracketed NE column (the 11th: ``(PERSON*``, ``*``, ``*)``, ``(GPE)``) becomes BIO over the 18
    OntoNotes types. ``task.<split>_file`` may name one ``*_gold_conll`` file or a directory instead.

    Truncation: as conll03 (words past ``task.max_seq_length`` sub-words are predicted ``O``, counted)."""

    entity_types = ("CARDINAL", "DATE", "EVENT", "FAC", "GPE", "LANGUAGE", "LAW", "LOC", "MONEY", "NORP",
                    "ORDINAL", "ORG", "PERCENT", "PERSON", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART")
    SPLIT_DIRS = {"train": ("train",), "dev": ("development", "dev"), "test": ("test",)}

    def default_source(self, split):
        return gold_conll_split_dir(self, split)

    def read_split(self, split):
        out = []
        for sent in read_gold_conll_split(self, split):
            tags = brackets_to_bio(sent.ne_cells, str(sent.path), sent.line)
            out.append(Sentence(sent.words, tags, f"{sent.path}:{sent.line}"))
        return out


def gold_conll_split_dir(task: TaggingTask, split: str) -> Path:
    """The split's directory in the CoNLL-2012 layout under data_dir (the first of ``SPLIT_DIRS``)."""
    root = task.data_dir()
    for name in task.SPLIT_DIRS[split]:
        if (root / name).is_dir():
            return root / name
    raise ConfigError(f"task.data_dir: {root} has no {' or '.join(task.SPLIT_DIRS[split])} directory "
                      f"(the CoNLL-2012 layout: train/, development/, test/ with *_gold_conll files)")


def read_gold_conll_split(task: TaggingTask, split: str) -> list[GoldConllSentence]:
    """Every sentence of a split in the CoNLL-2012 layout (see ``Ontonotes``): one ``*_gold_conll``
    file, or every one under the split's directory."""
    path = task.split_source(split)
    files = [path] if path.is_file() else gold_conll_files(path)
    sentences = [s for f in files for s in read_gold_conll(f)]
    if not sentences:
        raise DataError(f"{files[0] if len(files) == 1 else files[0].parent}: no sentences (empty file?)")
    return sentences


@TASKS.register("conll04")
class Conll04(TaggingTask):
    """CoNLL04 entities (the entity part of the Roth & Yih 2004 corpus) in the JSON release used by
    the span-based relation-extraction papers (SpERT and after): ``conll04_train.json`` /
    ``conll04_dev.json`` / ``conll04_test.json`` (or ``train.json`` / ``dev.json`` / ``test.json``), each a
    JSON list of ``{"tokens": [...], "entities": [{"type": "Peop", "start": 0, "end": 2}, ...],
    "relations": [...]}`` with ``end`` exclusive; relations are ignored. Types Loc, Org, Peop, Other.
    Errors name the file and the example's index (and ``orig_id`` when present).

    Truncation: as conll03 (words past ``task.max_seq_length`` sub-words are predicted ``O``, counted)."""

    entity_types = ("Loc", "Org", "Peop", "Other")
    split_files = {s: (f"conll04_{s}.json", f"{s}.json") for s in ("train", "dev", "test")}

    def read_split(self, split):
        path = self.split_source(split)
        try:
            docs = json.loads(read_text(path) or "[]")
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(docs, list):
            raise DataError(f"{path}: expected a JSON list of examples, got {type(docs).__name__}")
        if not docs:
            raise DataError(f"{path}: no examples (empty list)")
        return [self._sentence(doc, f"{path}: example {i}") for i, doc in enumerate(docs)]

    def _sentence(self, doc, where: str) -> Sentence:
        if isinstance(doc, dict) and "orig_id" in doc:
            where += f" (orig_id {doc['orig_id']})"
        for key in ("tokens", "entities"):
            if not isinstance(doc, dict) or key not in doc:
                raise DataError(f"{where}: missing field {key!r}")
        words = doc["tokens"]
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
            raise DataError(f"{where}: 'tokens' must be a non-empty list of non-empty strings")
        tags = ["O"] * len(words)
        for ent in doc["entities"]:
            if not isinstance(ent, dict) or any(k not in ent for k in ("type", "start", "end")):
                raise DataError(f"{where}: every entity needs 'type', 'start' and 'end', got {ent!r}")
            typ, a, b = ent["type"], ent["start"], ent["end"]
            if typ not in self.entity_types:
                raise DataError(f"{where}: unknown entity type {typ!r} (known: {', '.join(self.entity_types)})")
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b <= len(words)):
                raise DataError(f"{where}: entity span [{a}, {b}) is outside the {len(words)} tokens")
            if any(t != "O" for t in tags[a:b]):
                raise DataError(f"{where}: entity {typ} [{a}, {b}) overlaps another entity")
            tags[a:b] = [f"B-{typ}"] + [f"I-{typ}"] * (b - a - 1)
        return Sentence(words, tags, where)

"""Named-entity recognition (wnut16, conll03, ontonotes, conll04) on ``TaggingTask`` (``tagging.py``):
per-word BIO tags, entity-level micro-F1; the file readers are in ``readers.py``.
Every task's files, metric and truncation policy: docs/tasks.md."""
from __future__ import annotations

from deepprompt.errors import DataError
from deepprompt.fileio import load_json, read_text
from deepprompt.registry import TASKS
from deepprompt.tasks.base import split_80_10_10
from deepprompt.tasks.readers import Sentence, brackets_to_bio, get_field, read_conll
from deepprompt.tasks.tagging import GOLD_CONLL_DIRS, GOLD_CONLL_HELP, TaggingTask, read_gold_conll_split


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
    data_dir_may_be_file = True
    split_files = {s: (s, f"{s}.txt", f"{s}.conll", f"{s}.tsv", "ner.txt") for s in ("train", "dev", "test")}

    def read_split(self, split):
        path = self.split_source(split)
        sentences = read_conll(path)
        # one file for all three splits (the released ner.txt, or data_dir naming a file): split it
        shared = not getattr(self.cfg, f"{split}_file") and (path.name == self.SINGLE_FILE or path == self.data_dir())
        return self._split_single(sentences, split) if shared else sentences

    def _split_single(self, sentences, split):
        return [sentences[i] for i in split_80_10_10(range(len(sentences)), self.SPLIT_SEED)[split]]


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
    split_files, source_kind, data_help = GOLD_CONLL_DIRS, "dir", GOLD_CONLL_HELP

    def read_split(self, split):
        out = []
        for sent in read_gold_conll_split(self, split):
            tags = brackets_to_bio(sent.ne_cells, str(sent.path), sent.line)
            out.append(Sentence(sent.words, tags, f"{sent.path}:{sent.line}"))
        return out


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
        docs = load_json(read_text(path) or "[]", path)
        if not isinstance(docs, list):
            raise DataError(f"{path}: expected a JSON list of examples, got {type(docs).__name__}")
        if not docs:
            raise DataError(f"{path}: no examples (empty list)")
        return [self._sentence(doc, f"{path}: example {i}") for i, doc in enumerate(docs)]

    def _sentence(self, doc, where: str) -> Sentence:
        if isinstance(doc, dict) and "orig_id" in doc:
            where += f" (orig_id {doc['orig_id']})"
        words = get_field(doc, "tokens", where, list)
        if not words or not all(isinstance(w, str) and w for w in words):
            raise DataError(f"{where}: 'tokens' must be a non-empty list of non-empty strings")
        tags = ["O"] * len(words)
        for ent in get_field(doc, "entities", where, list):
            if not isinstance(ent, dict) or any(k not in ent for k in ("type", "start", "end")):
                raise DataError(f"{where}: every entity needs 'type', 'start' and 'end', got {ent!r}")
            typ = ent["type"]
            a, b = (get_field(ent, k, f"{where}: entity {typ!r}", int) for k in ("start", "end"))
            if typ not in self.entity_types:
                raise DataError(f"{where}: unknown entity type {typ!r} (known: {', '.join(self.entity_types)})")
            if not 0 <= a < b <= len(words):
                raise DataError(f"{where}: entity span [{a}, {b}) is outside the {len(words)} tokens")
            if any(t != "O" for t in tags[a:b]):
                raise DataError(f"{where}: entity {typ} [{a}, {b}) overlaps another entity")
            tags[a:b] = [f"B-{typ}"] + [f"I-{typ}"] * (b - a - 1)
        return Sentence(words, tags, where)

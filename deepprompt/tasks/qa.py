"""Extractive question answering on SQuAD v1.1 / v2.0 JSON: question + context windows, start/end
logits per token, n-best span search, the official EM/F1.

Files (``task.data_dir``): ``train-v1.1.json``/``dev-v1.1.json`` (squad), ``train-v2.0.json``/
``dev-v2.0.json`` (squad_v2) or ``train.json``/``dev.json``; or the SQuADShifts layout of the
``squad`` asset (``squaddev_v1.1.json`` + ``new_wiki``/``nyt``/``reddit``/``amazon_reviews``
``_v1.0.json``), where train is the concatenation of the SQuADShifts sets (``task.train_files``
picks them) and dev is SQuAD v1.1 dev. There is no test split.

Windows: the question (cut to ``task.max_query_length`` tokens) is repeated in every window; the
context is cut into windows of what is left of ``task.max_seq_length``, consecutive windows sharing
``task.doc_stride`` tokens, so nothing is truncated away (an answer longer than doc_stride + 1 tokens
that crosses a window edge is whole in no window: counted and logged). Training labels: a window that holds
the whole (first) gold answer points at its first and last token; every other window, and every
unanswerable question, points at position 0 ([CLS]), in v1.1 and v2.0 alike (in v1.1 the [CLS]
score is never picked as an answer).

Answers whose ``answer_start`` does not point at their text are re-anchored at the occurrence of
the text in the context nearest to it (counted and logged per file; SQuADShifts amazon_reviews has
947 such offsets); an answer whose text is not in its context at all is a ``DataError`` naming the
file and the question id."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from deepprompt.errors import ConfigError, DataError
from deepprompt.fileio import load_json, read_text
from deepprompt.metrics.squad import merge_windows, squad_v1, squad_v2
from deepprompt.registry import TASKS
from deepprompt.tasks.base import Task, log
from deepprompt.tasks.readers import get_field

SHIFT_SETS = ("new_wiki", "nyt", "reddit", "amazon_reviews")
SHIFT_ALIASES = {"amazon": "amazon_reviews"}


def _where(path: Path, qid) -> str:
    return f"{path}: question {qid!r}" if qid is not None else str(path)


def _anchor(context: str, text: str, start: int) -> int | None:
    """``start`` if the text is there, else the nearest occurrence of the text (None: nowhere)."""
    if context[start:start + len(text)] == text:
        return start
    hits, i = [], context.find(text)
    while i != -1:
        hits.append(i)
        i = context.find(text, i + 1)
    return min(hits, key=lambda h: (abs(h - start), h)) if hits else None


def read_squad_json(path: Path, version_2: bool) -> tuple[list[dict], int]:
    """(records, re-anchored answers) of one SQuAD JSON file. A record: id, question, context,
    answer_texts, answer_starts (char offsets, checked against the context), is_impossible."""
    text = read_text(path)
    if not text.strip():
        raise DataError(f"{path}: empty file")
    doc = load_json(text, path)
    records, moved = [], 0
    for a, article in enumerate(get_field(doc, "data", str(path), list)):
        for p, para in enumerate(get_field(article, "paragraphs", f"{path}: data[{a}]", list)):
            where_p = f"{path}: data[{a}].paragraphs[{p}]"
            context = get_field(para, "context", where_p)
            for qa in get_field(para, "qas", where_p, list):
                qid = get_field(qa, "id", where_p)
                where = _where(path, qid)
                question = get_field(qa, "question", where)
                answers = get_field(qa, "answers", where, list)
                impossible = qa.get("is_impossible", False)
                if not isinstance(impossible, bool):
                    raise DataError(f"{where}: field 'is_impossible' must be true or false")
                if impossible and not version_2:
                    raise DataError(f"{where}: is_impossible questions are SQuAD 2.0; use task.name=squad_v2")
                if impossible and answers:
                    raise DataError(f"{where}: is_impossible is true but it has answers")
                if not impossible and not answers:
                    raise DataError(f"{where}: no answers (and is_impossible is not true)")
                if not question.strip() or not context.strip():
                    raise DataError(f"{where}: empty {'question' if not question.strip() else 'context'}")
                texts, starts = [], []
                for ans in answers:
                    t = get_field(ans, "text", where)
                    s = get_field(ans, "answer_start", where, int)
                    if not t.strip():
                        raise DataError(f"{where}: empty answer text")
                    at = _anchor(context, t, s)
                    if at is None:
                        raise DataError(f"{where}: answer {t!r} (answer_start {s}) is not in its context")
                    moved += at != s
                    texts.append(t)
                    starts.append(at)
                records.append({"id": qid, "question": question, "context": context, "answer_texts": texts,
                                "answer_starts": starts, "is_impossible": impossible})
    if not records:
        raise DataError(f"{path}: no questions")
    return records, moved


@dataclass
class QAOptions:
    max_eval_examples: int | None = None
    """Score only the first N questions (file order) of dev/test (quick or budgeted evaluation);
    None = all."""
    doc_stride: int = 32
    """Context tokens shared by consecutive windows when a context does not fit in one; must be
    less than max_seq_length - max_query_length - the special tokens."""
    max_query_length: int = 64
    """Questions longer than this many sub-word tokens are cut to it (counted in the log)."""
    max_answer_length: int = 30
    """Longest answer span, in sub-word tokens, the n-best search considers."""
    n_best: int = 20
    """Start and end candidates per window (top-n each) in the span search."""
    train_files: list[str] | None = None
    """JSON files (paths, names inside data_dir, or SQuADShifts set names new_wiki, nyt,
    reddit, amazon) concatenated as the train split; None = the data_dir's train file (for the
    squad asset: all four SQuADShifts sets)."""

    def check(self, cfg, prefix: str) -> None:
        if cfg.train_file and self.train_files:
            raise ConfigError(f"{prefix}train_files: set {prefix}train_file (one file) or {prefix}train_files "
                              f"(several), not both")
        for k in ("max_query_length", "max_answer_length", "n_best"):
            if getattr(self, k) < 1:
                raise ConfigError(f"{prefix}{k}: must be >= 1, got {getattr(self, k)}")
        if self.doc_stride < 0:
            raise ConfigError(f"{prefix}doc_stride: must be >= 0, got {self.doc_stride}")
        if self.max_eval_examples is not None and self.max_eval_examples < 1:
            raise ConfigError(f"{prefix}max_eval_examples: must be >= 1, got {self.max_eval_examples}")


class QATask(Task):
    Options = QAOptions
    head = "qa"
    version_2: ClassVar[bool] = False
    source_kind, data_help = "file", "train/dev JSON"
    split_files = {"train": ("train.json",), "dev": ("dev.json", "squaddev_v1.1.json"), "test": ("test.json",)}
    host_keys = ("id", "char_start", "char_end")

    def __init__(self, cfg, tokenizer):
        super().__init__(cfg, tokenizer)
        self._records: dict[str, list[dict]] = {}
        n_special = tokenizer.num_special_tokens_to_add(pair=True)
        opts = self.opts
        room = cfg.max_seq_length - opts.max_query_length - n_special
        if room <= opts.doc_stride:
            raise ConfigError(f"task.doc_stride: {opts.doc_stride} leaves no new context per window: max_seq_length "
                              f"{cfg.max_seq_length} - max_query_length {opts.max_query_length} - {n_special} special "
                              f"tokens = {room} context tokens per window; it must exceed doc_stride")

    @property
    def labels(self):
        return ["start", "end"]

    # ------------------------------------------------------------------ files
    @property
    def splits(self) -> tuple[str, ...]:
        """train and dev (SQuAD's test set is not released); test when ``task.test_file`` names one."""
        return ("train", "dev", "test") if self.cfg.test_file else ("train", "dev")

    def missing_hint(self, split: str) -> str:
        return " or SQuADShifts sets" if split == "train" else ""

    def split_paths(self, split: str) -> list[Path]:
        """The split's JSON file(s): ``split_source``, or for train the several files of
        ``task.train_files`` or the SQuADShifts sets (only when ``task.train_file`` is not set)."""
        if split == "train" and self.explicit_file(split) is None:
            root = self.data_dir()
            if self.opts.train_files:
                return [self._resolve(root, name) for name in self.opts.train_files]
            if not any((root / n).is_file() for n in self.split_names("train")):
                shifts = [root / f"{s}_v1.0.json" for s in SHIFT_SETS]
                if any(p.is_file() for p in shifts):
                    return [p for p in shifts if p.is_file()]
        return [self.split_source(split)]

    @staticmethod
    def _resolve(root: Path, name: str) -> Path:
        shift = SHIFT_ALIASES.get(name, name)
        for path in (Path(name), root / name, root / f"{shift}_v1.0.json"):
            if path.is_file():
                return path
        raise ConfigError(f"task.train_files: {name!r} is neither a file nor a SQuADShifts set in {root} "
                          f"(sets: {', '.join(SHIFT_SETS)}, or amazon)")

    def read_examples(self, split):
        if split not in self.splits:
            raise ConfigError(f"task {self.name}: no {split!r} split (splits: {', '.join(self.splits)})")
        records, seen = [], {}
        for path in self.split_paths(split):
            recs, moved = read_squad_json(path, self.version_2)
            if moved:
                log.warning("%s: %d answer(s) had an answer_start that does not point at their text; "
                            "re-anchored at the nearest occurrence of the text in the context", path, moved)
            for r in recs:
                if r["id"] in seen:
                    raise DataError(f"{path}: question {r['id']!r}: duplicate id (also in {seen[r['id']]})")
                seen[r["id"]] = path
            records += recs
        if split != "train" and self.opts.max_eval_examples is not None and len(records) > self.opts.max_eval_examples:
            log.info("%s/%s: scoring the first %d of %d questions (task.max_eval_examples)", self.name, split,
                     self.opts.max_eval_examples, len(records))
            records = records[:self.opts.max_eval_examples]
        self._records[split] = records
        return records

    # ------------------------------------------------------------------ features
    def build_features(self, split):
        self.require_fast_tokenizer("character offsets")
        feats = super().build_features(split)
        cut = sum(feats.dataset["question_cut"])
        if cut:
            log.warning("%s/%s: %d question(s) longer than task.max_query_length=%d tokens were cut to it",
                        self.name, split, cut, self.opts.max_query_length)
        encoded = set(feats.dataset["id"])  # every question gives a window; train may be cut (max_train_examples)
        records = [r for r in self._records[split] if r["id"] in encoded]
        held = {i for i, s in zip(feats.dataset["id"], feats.dataset["start_positions"]) if s > 0}
        lost = [r["id"] for r in records if r["answer_texts"] and r["id"] not in held]
        if lost and split == "train":
            log.warning("%s/%s: %d question(s) have no window holding their whole first answer (longer than "
                        "doc_stride + 1 tokens across a window edge, e.g. %r); all their windows are labelled "
                        "[CLS] in training", self.name, split, len(lost), lost[0])
        log.info("%s/%s: %d questions -> %d windows (max_seq_length %d, doc_stride %d)", self.name, split,
                 len(records), len(feats), self.cfg.max_seq_length, self.opts.doc_stride)
        return feats

    def _cut_questions(self, questions: list[str]) -> tuple[list[str], list[int]]:
        enc = self.tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        out, cut = [], []
        for q, offsets in zip(questions, enc["offset_mapping"]):
            over = len(offsets) > self.opts.max_query_length
            out.append(q[:offsets[self.opts.max_query_length - 1][1]] if over else q)
            cut.append(int(over))
        return out, cut

    def encode(self, batch):
        questions, cut = self._cut_questions([q.lstrip() for q in batch["question"]])
        enc = self.tokenizer(questions, batch["context"], truncation="only_second", max_length=self.cfg.max_seq_length,
                             stride=self.opts.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        out = {k: [] for k in ("input_ids", "attention_mask", "token_type_ids", "start_positions", "end_positions",
                               "id", "char_start", "char_end", "question_cut")}
        if "token_type_ids" not in enc:
            del out["token_type_ids"]
        first_window = set()
        for i, ex in enumerate(enc["overflow_to_sample_mapping"]):
            for k in ("input_ids", "attention_mask", "token_type_ids"):
                if k in out:
                    out[k].append(list(enc[k][i]))
            seq_ids = enc.sequence_ids(i)
            starts = [o[0] if s == 1 else -1 for o, s in zip(enc["offset_mapping"][i], seq_ids)]
            ends = [o[1] if s == 1 else -1 for o, s in zip(enc["offset_mapping"][i], seq_ids)]
            out["char_start"].append(starts)
            out["char_end"].append(ends)
            out["id"].append(batch["id"][ex])
            out["question_cut"].append(cut[ex] if ex not in first_window else 0)
            first_window.add(ex)
            s, e = self._label(starts, ends, batch["answer_texts"][ex], batch["answer_starts"][ex])
            out["start_positions"].append(s)
            out["end_positions"].append(e)
        return out

    @staticmethod
    def _label(starts: list[int], ends: list[int], texts: list[str], answer_starts: list[int]) -> tuple[int, int]:
        """Token positions of the first gold answer if this window holds all of it, else (0, 0)."""
        if not texts:
            return 0, 0
        ctx = [t for t, s in enumerate(starts) if s >= 0]
        lo, hi = answer_starts[0], answer_starts[0] + len(texts[0])
        text = texts[0]
        lo += len(text) - len(text.lstrip())  # surrounding whitespace is in no token
        hi -= len(text) - len(text.rstrip())
        if not ctx or starts[ctx[0]] > lo or ends[ctx[-1]] < hi:
            return 0, 0
        first = next(t for t in ctx if ends[t] > lo)
        last = next(t for t in reversed(ctx) if starts[t] < hi)
        return first, last

    def raw_features(self, record, where="input"):
        """``{"question": ..., "context": ...}`` -> its windows, exactly as a dev question's."""
        self.require_fast_tokenizer("character offsets")
        for key in ("question", "context"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise DataError(f"{where}: task {self.name} needs {key!r} (a non-empty string)")
        windows = self.encode_rows([{"id": 0, "question": record["question"], "context": record["context"],
                                     "answer_texts": [], "answer_starts": []}])
        labels = ("start_positions", "end_positions")
        return [{k: v for k, v in w.items() if k not in labels} for w in windows]

    def cut_effect(self):
        return f"their questions were cut to task.max_query_length={self.opts.max_query_length} tokens"

    def input_cut(self, feature):
        return bool(feature["question_cut"])

    def raw_prediction(self, record, predictions):
        """The best span over the windows: ``answer`` (its text), ``answer_start`` (its character
        offset in the context) and ``score``; squad_v2 also gives ``null_score_diff`` (no-answer
        score minus the span's) and answers "" when it is above 0."""
        (m,) = merge_windows(predictions).values()
        start, end = m["span"] or (0, 0)
        out = {"answer": record["context"][start:end], "answer_start": start if m["span"] else -1,
               "score": m["score"] if m["span"] else None}
        if self.version_2:
            out["null_score_diff"] = m["null"] - m["score"]
            if out["null_score_diff"] > 0:
                out["answer"], out["answer_start"] = "", -1
        return out

    # ------------------------------------------------------------------ predictions
    def predict(self, logits, features):
        """Per window: its id, the no-answer score (start + end score at position 0) and the n-best
        spans ``[char_start, char_end, score]`` inside the context, at most max_answer_length
        tokens long, start <= end."""
        out = []
        n_best, max_len = self.opts.n_best, self.opts.max_answer_length
        for row, feat in zip(logits, features):
            n = len(feat["char_start"])
            start, end = row[:n, 0], row[:n, 1]
            in_ctx = torch.tensor([c >= 0 for c in feat["char_start"]])
            k = min(n_best, int(in_ctx.sum()))
            s_idx = start.masked_fill(~in_ctx, -math.inf).topk(k).indices.tolist()
            e_idx = end.masked_fill(~in_ctx, -math.inf).topk(k).indices.tolist()
            spans = [(s, e, float(start[s] + end[e])) for s in s_idx for e in e_idx if s <= e < s + max_len]
            spans.sort(key=lambda x: -x[2])
            out.append({"id": feat["id"], "null": float(start[0] + end[0]),
                        "spans": [[feat["char_start"][s], feat["char_end"][e], sc] for s, e, sc in spans[:n_best]]})
        return out

    def answers(self, predictions: list, split: str) -> dict[str, dict]:
        """Per question: ``text`` (best non-empty span) and ``null_diff`` (no-answer score minus it)."""
        records = {r["id"]: r for r in self._records.get(split) or self.read_examples(split)}
        out = {}
        for qid, m in merge_windows(predictions).items():
            text = records[qid]["context"][m["span"][0]:m["span"][1]] if m["span"] else ""
            out[qid] = {"text": text, "null_diff": m["null"] - m["score"]}
        return out

    def metrics(self, predictions, split):
        records = self._records.get(split) or self.read_examples(split)
        answers = self.answers(predictions, split)
        golds = {r["id"]: r["answer_texts"] for r in records}
        texts = {q: a["text"] for q, a in answers.items()}
        if not self.version_2:
            return squad_v1(texts, golds)
        return squad_v2(texts, {q: a["null_diff"] for q, a in answers.items()}, golds)


@TASKS.register("squad")
class Squad(QATask):
    """SQuAD v1.1. Default data: the ``squad`` asset (``python -m deepprompt fetch-assets squad``):
    train = the four SQuADShifts sets, dev = SQuAD v1.1 dev."""
    main_metric = "f1"
    default_asset = "squad"
    split_files = {"train": ("train-v1.1.json", "train.json"), "dev": ("dev-v1.1.json", "dev.json", "squaddev_v1.1.json"),
                   "test": ("test.json",)}


@TASKS.register("squad_v2")
class SquadV2(QATask):
    """SQuAD 2.0: unanswerable questions (is_impossible) answer "" when the no-answer score beats
    the best span by more than a threshold; best_f1 is at the threshold tuned on dev."""
    main_metric = "best_f1"
    version_2 = True
    split_files = {"train": ("train-v2.0.json", "train.json"), "dev": ("dev-v2.0.json", "dev.json", "squaddev_v1.1.json"),
                   "test": ("test.json",)}

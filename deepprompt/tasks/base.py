"""A task supplies data (features per split), a head name, predictions and a metric. It never
knows about DeepSpeed or the prompt method.

The pipeline of every task: ``read_examples(split)`` reads the official files into plain records
(validating them: a bad record is a one-line ``DataError`` naming file:line or the example id), then
``encode`` tokenises them in batches through ``datasets.Dataset.map`` into features, cached as Arrow
files keyed by the records, the tokenizer, the task config and the task's code. One record may give
several features (QA windows) or none (counted and logged by the task)."""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from deepprompt.config import TaskConfig
from deepprompt.config.loading import build_options
from deepprompt.errors import ConfigError, DataError
from deepprompt.fileio import make_output_dir
from deepprompt.registry import TASKS
from deepprompt.tasks.sources import SplitSources

log = logging.getLogger("deepprompt")

# Feature keys that become tensors; anything else in a feature (word ids, raw text) stays on the host.
TENSOR_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
PAD_LABEL = -100
CACHE_ENV = "DEEPPROMPT_CACHE"


def cache_root() -> Path | None:
    """Where encoded features are cached: ``$DEEPPROMPT_CACHE`` (empty = no cache), else
    ``~/.cache/deepprompt/features``."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return Path(env) if env else None
    return Path.home() / ".cache" / "deepprompt" / "features"


def _tokenizer_identity(tok) -> str:
    # not in the backend's JSON: the side truncation cuts (tokenizer_config.json's truncation_side)
    # and which tokens are special (a generation feature ends in eos_token_id, a cloze one has mask_token_id)
    wrapper = json.dumps({"truncation_side": getattr(tok, "truncation_side", None),
                          "special_tokens": getattr(tok, "special_tokens_map", None)}, sort_keys=True, default=str)
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:  # minus the truncation/padding state a previous call left behind
        spec = json.loads(backend.to_str())
        return json.dumps({k: v for k, v in spec.items() if k not in ("truncation", "padding")}, sort_keys=True) + wrapper
    return json.dumps(sorted(tok.get_vocab().items())) + json.dumps(getattr(tok, "init_kwargs", {}),
                                                                    sort_keys=True, default=str) + wrapper


def split_80_10_10(items: list[int], seed: int, keep: int | None = None) -> dict[str, list[int]]:
    """A one-file corpus cut into splits deterministically (wnut16's ner.txt, tweet_sentiment's
    tweets.csv): ``items`` (positions in the file) shuffled with ``random.Random(seed)``, the first
    ``keep`` of them if given, then 10 % test, 10 % dev and the rest train, each back in file order."""
    import random

    order = list(items)
    random.Random(seed).shuffle(order)
    if keep is not None:
        order = order[:keep]
    n = round(0.1 * len(order))
    return {"test": sorted(order[:n]), "dev": sorted(order[n:2 * n]), "train": sorted(order[2 * n:])}


class FeatureSet:
    """A split's features, stored as an Arrow table (``datasets.Dataset``) and read like a list:
    ``fs[i]`` is one feature dict, ``fs[a:b]`` a list of them."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return [self.dataset[i] for i in range(*idx.indices(len(self)))]
        return self.dataset[int(idx)]

    def __iter__(self):
        return iter(self.dataset)


@dataclass
class NoOptions:
    """A task family without ``task.*`` keys of its own."""


class Task(SplitSources):
    Options: ClassVar[type] = NoOptions
    """The dataclass of the family's own ``task.*`` keys (``TaskConfig.options`` built into it: ``self.opts``)."""
    head: ClassVar[str]
    """Registered head name (deepprompt.models.heads)."""
    main_metric: ClassVar[str]
    """The metric best-dev tracking maximises."""
    splits: ClassVar[tuple[str, ...]] = ("train", "dev", "test")
    tensor_keys: ClassVar[tuple[str, ...]] = TENSOR_KEYS
    """Feature keys ``collate`` turns into tensors (sequence keys are right-padded)."""
    pad_values: ClassVar[dict[str, int]] = {"labels": PAD_LABEL}
    """Padding value per sequence key (input_ids pads with the tokenizer's pad id, others with 0)."""
    formulations: ClassVar[tuple[str, ...]] = ("classification",)
    """The ``task.formulation`` values the task supports."""
    generates: ClassVar[bool] = False
    """Evaluated and served by generating text (``engine/generate.py``), not from one forward's logits."""

    def __init__(self, cfg: TaskConfig, tokenizer):
        if cfg.formulation not in self.formulations:
            raise ConfigError(f"task.formulation: task {cfg.name} supports only {' or '.join(self.formulations)}, "
                              f"not {cfg.formulation!r}")
        self.cfg = cfg
        self.opts = self.options_of(cfg)
        self.tokenizer = tokenizer
        self._features: dict[str, FeatureSet] = {}
        self._located: set[str] = set()  # splits whose source was asked for through ``split_source``

    @property
    def name(self) -> str:
        return self.cfg.name

    @classmethod
    def options_of(cls, cfg: TaskConfig, prefix: str = "task."):
        """``cfg.options`` built into ``cls.Options`` by the config's own coercion; a key the family
        does not have, or a bad value, is one line naming ``<prefix><key>``. Checked at start-up by
        ``engine/preflight.check_names`` (with each task's prefix), before any data loads."""
        opts = build_options(cls.Options, cfg.options, prefix, TaskConfig, cfg.name)
        check = getattr(opts, "check", None)
        if check is not None:
            check(cfg, prefix)
        return opts

    @property
    def labels(self) -> list[str]:
        raise NotImplementedError

    def require_fast_tokenizer(self, why: str) -> None:
        """Word alignment and character offsets need a fast (Rust) tokenizer: one line otherwise."""
        if not getattr(self.tokenizer, "is_fast", False):
            raise ConfigError(f"model.path: task {self.name} needs a fast tokenizer (tokenizer.json) for {why}")

    def read_examples(self, split: str) -> list[dict]:
        """The split's records as plain JSON-able dicts (same keys and value types in every record),
        validated; errors name file:line or the example id."""
        raise NotImplementedError

    FOLD_SEED: ClassVar[int] = 1234
    """The shuffle of ``task.folds`` (fixed: every run of every sweep sees the same folds)."""

    def fold_examples(self, split: str) -> list[dict]:
        """``split`` of fold ``task.fold`` of ``task.folds`` (see ``TaskConfig.folds``): the records of
        every split pooled in split order, shuffled with ``FOLD_SEED``, cut into k parts; the fold's
        part gives dev (first half) and test (second half), the rest is train, each in pooled order.
        A record's integer ``id`` (its position in its split) is renumbered within the new split."""
        import random

        if "test" not in self.splits:
            raise ConfigError(f"task.folds: task {self.name} has no labelled test split to pool and rotate "
                              f"(splits: {', '.join(self.splits)})")
        if not hasattr(self, "_fold_pool"):
            pool = [r for s in ("train", "dev", "test") for r in self.read_examples(s)]
            if pool and not isinstance(pool[0].get("id"), int):
                raise ConfigError(f"task.folds: task {self.name} cannot be re-split (its records are keyed by "
                                  f"their own ids, not by position)")
            self._fold_pool = pool
        pool, k, f = self._fold_pool, self.cfg.folds, self.cfg.fold
        if len(pool) < 2 * k:
            raise ConfigError(f"task.folds: {k} folds need at least {2 * k} examples; task {self.name} has {len(pool)}")
        order = list(range(len(pool)))
        random.Random(self.FOLD_SEED).shuffle(order)
        lo, hi = f * len(pool) // k, (f + 1) * len(pool) // k
        mid = (lo + hi) // 2
        held = {"dev": order[lo:mid], "test": order[mid:hi]}
        held["train"] = order[:lo] + order[hi:]
        return [{**pool[i], "id": n} for n, i in enumerate(sorted(held[split]))]

    def encode(self, batch: dict[str, list]) -> dict[str, list]:
        """Tokenise a batch of records (column-wise, as ``datasets.Dataset.map(batched=True)``
        passes it) into features (column-wise; any number of rows)."""
        raise NotImplementedError

    def cache_key(self) -> str:
        """Everything besides the records that changes the features: tokenizer, config, the code of
        the task's class and of every Task class it derives from."""
        tok = self.tokenizer
        modules = dict.fromkeys(inspect.getmodule(c) for c in type(self).__mro__ if issubclass(c, Task))
        parts = [type(self).__module__, type(self).__qualname__, *(inspect.getsource(m) for m in modules),
                 json.dumps(vars(self.cfg), sort_keys=True, default=str),
                 type(tok).__name__, _tokenizer_identity(tok)]
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def examples(self, split: str) -> list[dict]:
        """The records ``build_features`` encodes: the split's (``read_examples``) or its fold's
        (``fold_examples``), and of train only the first ``task.max_train_examples`` (logged). The cut
        is by record, so a record that gives several features (QA windows, MultiRC answer options,
        ReCoRD candidates) is kept or left out whole."""
        examples = self.fold_examples(split) if self.cfg.folds else self.read_examples(split)
        limit = self.cfg.max_train_examples
        if split == "train" and limit is not None and len(examples) > limit:
            log.info("%s/train: training on the first %d of %d examples (task.max_train_examples)", self.name,
                     limit, len(examples))
            examples = examples[:limit]
        return examples

    def build_features(self, split: str) -> FeatureSet:
        import datasets

        examples = self.examples(split)
        if getattr(self.cfg, f"{split}_file", None) and split not in self._located:
            raise ConfigError(f"task.{split}_file: task {self.name} cannot read its {split} split from a file "
                              f"of its own; unset it (and use task.data_dir)")
        if not examples:
            raise DataError(f"task {self.name}: the {split} split has no examples")
        digest = hashlib.sha256((self.cache_key() + split).encode())
        for ex in examples:
            digest.update(json.dumps(ex, sort_keys=True, default=str).encode())
        fingerprint = digest.hexdigest()[:32]
        root = cache_root()
        cache_file = str(root / self.name / f"{split}-{fingerprint}.arrow") if root else None
        if cache_file:
            make_output_dir(Path(cache_file).parent, "the feature cache", DataError, key=f"${CACHE_ENV}")
        if os.environ.get("RANK", "0") != "0":
            datasets.disable_progress_bars()
        raw = datasets.Dataset.from_list(examples)
        feats = raw.map(self.encode, batched=True, batch_size=1000, remove_columns=raw.column_names,
                        cache_file_name=cache_file, load_from_cache_file=cache_file is not None,
                        new_fingerprint=fingerprint, desc=f"{self.name}/{split}: tokenizing")
        if len(feats) == 0:
            raise DataError(f"task {self.name}: the {split} split gave no features (all examples skipped?)")
        return FeatureSet(feats)

    def encode_rows(self, records: list[dict]) -> list[dict]:
        """``encode`` on a few records given row-wise (prediction from raw input); its features,
        row-wise (a record may give several)."""
        cols = self.encode({k: [r[k] for r in records] for k in records[0]})
        return [{k: v[i] for k, v in cols.items()} for i in range(len(cols["input_ids"]))]

    def encode_one(self, record: dict) -> dict:
        """``encode`` on a single record (prediction from raw input); its first feature."""
        return self.encode_rows([record])[0]

    def features(self, split: str) -> FeatureSet:
        if split not in self._features:
            self._features[split] = self.build_features(split)
        return self._features[split]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad every sequence key to the longest in the batch."""
        pad_id = self.tokenizer.pad_token_id or 0
        pads = {"input_ids": pad_id, **self.pad_values}
        batch = {}
        for key in self.tensor_keys:
            if key not in features[0]:
                continue
            values = [f[key] for f in features]
            if isinstance(values[0], list):
                width = max(len(v) for v in values)
                values = [v + [pads.get(key, 0)] * (width - len(v)) for v in values]
            batch[key] = torch.tensor(values, dtype=torch.long)
        return batch

    def raw_features(self, record: dict, where: str = "input") -> list[dict]:
        """The features (no labels) of one raw input, e.g. a ``{"text": ...}`` line of a prediction
        file: one, or several where a long input is cut into windows (QA); ``where`` (``file:line``)
        starts its error messages."""
        raise ConfigError(f"task {self.name}: predicting from raw input is not supported yet")

    def input_cut(self, feature: dict) -> bool:
        """Whether ``feature`` lost part of its input to the task's length limits: prediction from
        raw input logs how many inputs did and what became of them (``cut_effect``)."""
        return bool(feature.get("truncated"))

    def cut_effect(self) -> str:
        """What an input that ``input_cut`` lost, for that log line."""
        return f"their ends were cut to task.max_seq_length={self.cfg.max_seq_length} tokens"

    def raw_prediction(self, record: dict, predictions: list[dict]) -> dict:
        """One raw input's prediction from ``predict``'s outputs for its features (in order): by
        default the single feature's, without its id."""
        if len(predictions) != 1:
            raise ConfigError(f"task {self.name}: one raw input gave {len(predictions)} predictions and this "
                              f"task does not join them")
        return {k: v for k, v in predictions[0].items() if k != "id"}

    def predict(self, logits: torch.Tensor, features: list[dict]) -> list:
        """Per-example predictions (plain Python objects, gathered across ranks)."""
        raise NotImplementedError

    def metrics(self, predictions: list, split: str) -> dict[str, float]:
        raise NotImplementedError


def build_task(cfg: TaskConfig, tokenizer) -> Task:
    return TASKS.get(cfg.name, "task.name")(cfg, tokenizer)

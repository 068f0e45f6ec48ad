"""A task supplies data (features per split), a head name, predictions and a metric. It never
knows about DeepSpeed or the prompt method."""
from __future__ import annotations

import logging
from typing import ClassVar

import torch

from deepprompt.config import TaskConfig
from deepprompt.errors import ConfigError
from deepprompt.registry import TASKS

log = logging.getLogger("deepprompt")

# Feature keys that become tensors; anything else in a feature (word ids, raw text) stays on the host.
TENSOR_KEYS = ("input_ids", "attention_mask", "token_type_ids", "labels", "start_positions", "end_positions")
PAD_LABEL = -100


class Task:
    head: ClassVar[str]
    """Registered head name (deepprompt.models.heads)."""
    main_metric: ClassVar[str]
    """The metric best-dev tracking maximises."""
    splits: ClassVar[tuple[str, ...]] = ("train", "dev", "test")

    def __init__(self, cfg: TaskConfig, tokenizer):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self._features: dict[str, list[dict]] = {}

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def labels(self) -> list[str]:
        raise NotImplementedError

    def build_features(self, split: str) -> list[dict]:
        raise NotImplementedError

    def features(self, split: str) -> list[dict]:
        if split not in self._features:
            feats = self.build_features(split)
            if split == "train" and self.cfg.max_train_examples is not None:
                feats = feats[: self.cfg.max_train_examples]
            self._features[split] = feats
        return self._features[split]

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """Right-pad every sequence key to the longest in the batch."""
        pad_id = self.tokenizer.pad_token_id or 0
        pads = {"input_ids": pad_id, "labels": PAD_LABEL}
        batch = {}
        for key in TENSOR_KEYS:
            if key not in features[0]:
                continue
            values = [f[key] for f in features]
            if isinstance(values[0], list):
                width = max(len(v) for v in values)
                values = [v + [pads.get(key, 0)] * (width - len(v)) for v in values]
            batch[key] = torch.tensor(values, dtype=torch.long)
        return batch

    def raw_features(self, record: dict, where: str = "input") -> dict:
        """A feature (no labels) for one raw input, e.g. a ``{"text": ...}`` line of a prediction
        file; ``where`` (``file:line``) starts its error messages."""
        raise ConfigError(f"task {self.name}: predicting from raw input is not supported yet")

    def predict(self, logits: torch.Tensor, features: list[dict]) -> list:
        """Per-example predictions (plain Python objects, gathered across ranks)."""
        raise NotImplementedError

    def metrics(self, predictions: list, split: str) -> dict[str, float]:
        raise NotImplementedError


def build_task(cfg: TaskConfig, tokenizer) -> Task:
    return TASKS.get(cfg.name, "task.name")(cfg, tokenizer)

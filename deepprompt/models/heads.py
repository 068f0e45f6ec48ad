"""Task heads. A head maps the backbone's token states to logits and owns its loss; it never sees
the prompt (the prompted model strips input-prompt positions before calling it)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepprompt.registry import HEADS

IGNORE = -100


class Head(nn.Module):
    """Dropout + one linear layer of ``width(num_labels)`` outputs; subclasses pick the states it reads."""

    def __init__(self, hidden: int, num_labels: int = 0, dropout: float = 0.1):
        super().__init__()
        self.num_labels = num_labels
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, self.width(num_labels))

    @staticmethod
    def width(num_labels: int) -> int:
        return num_labels

    @classmethod
    def num_params(cls, hidden: int, num_labels: int = 0) -> int:
        return (hidden + 1) * cls.width(num_labels)

    def bind(self, adapter) -> None:
        """Called once by the prompted model with the backbone's adapter (heads that reuse a
        backbone module, like ``cloze``, keep a reference; the rest ignore it)."""

    def forward(self, hidden: torch.Tensor, batch: dict) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


@HEADS.register("classification")
class ClassificationHead(Head):
    """Linear on the first ([CLS]) token: logits [B, num_labels]; batch["labels"] [B]."""

    def forward(self, hidden, batch):
        return self.out(self.dropout(hidden[:, 0]))

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


@HEADS.register("token")
class TokenClassificationHead(ClassificationHead):
    """Linear on every token: logits [B, L, num_labels]; batch["labels"] [B, L] with -100 on
    special tokens, padding and every sub-word but a word's first."""

    def forward(self, hidden, batch):
        return self.out(self.dropout(hidden))

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)


@HEADS.register("qa")
class QAHead(Head):
    """Start/end scores per token: logits [B, L, 2]; batch["start_positions"/"end_positions"] [B]."""

    @staticmethod
    def width(num_labels):
        return 2

    def forward(self, hidden, batch):
        logits = self.out(self.dropout(hidden))
        if "attention_mask" in batch:  # never predict padding
            pad = batch["attention_mask"].reshape(logits.shape[:2]) == 0
            logits = logits.masked_fill(pad.unsqueeze(-1), torch.finfo(logits.dtype).min)
        return logits

    def loss(self, logits, batch):
        start, end = logits.float().unbind(-1)
        return (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2


@HEADS.register("multiple_choice")
class MultipleChoiceHead(Head):
    """One score per choice from its [CLS]: inputs [B, C, L] -> logits [B, C]; batch["labels"] [B]."""

    @staticmethod
    def width(num_labels):
        return 1

    def forward(self, hidden, batch):
        num_choices = batch["input_ids"].shape[1]
        return self.out(self.dropout(hidden[:, 0])).view(-1, num_choices)

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


@HEADS.register("cloze")
class ClozeHead(Head):
    """Verbalizer scoring (GLM's SuperGLUE format): the LM logit of each candidate answer token at
    the [MASK] position, through the backbone's output projection tied to its word embeddings; no
    parameters of its own. batch["mask_positions"] [B], batch["candidate_ids"] [B, C] -> logits
    [B, C]; batch["labels"] [B] indexes the candidates. The candidates' embedding rows are read by
    calling the embedding module, so ZeRO-3 gathers its partitioned weight as in any forward."""

    def __init__(self, hidden: int, num_labels: int = 0, dropout: float = 0.1):
        nn.Module.__init__(self)
        self.num_labels = num_labels
        self._embeddings = None

    @staticmethod
    def width(num_labels):
        return 0

    def bind(self, adapter) -> None:
        self._embeddings = adapter.word_embeddings  # a method, not a module: no second owner of the weight

    def forward(self, hidden, batch):
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        at_mask = hidden[rows, batch["mask_positions"]]  # [B, h]
        candidates = self._embeddings()(batch["candidate_ids"])  # [B, C, h]
        # in fp32: verbalizer logits differ by less than bf16 resolves at their magnitude (8 bits)
        return torch.einsum("bh,bch->bc", at_mask.float(), candidates.float())

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])

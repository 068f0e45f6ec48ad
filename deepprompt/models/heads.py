"""Task heads. A head maps the backbone's token states to logits and owns its loss; it never sees
the prompt (the prompted model strips input-prompt positions before calling it)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepprompt.errors import ConfigError
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


def pooled(hidden: torch.Tensor, batch: dict, last: bool) -> torch.Tensor:
    """[B, h]: the first token's state (an encoder's [CLS]) or, for a causal decoder, the LAST real
    token's (the only one that has seen the whole input), found from the attention mask so right
    and left padding alike work."""
    if not last:
        return hidden[:, 0]
    mask = batch.get("attention_mask")
    if mask is None:
        return hidden[:, -1]
    mask = mask.reshape(hidden.shape[:2])
    idx = torch.arange(mask.shape[1], device=mask.device)
    last_real = (mask.long() * (idx + 1)).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last_real]


class PooledHead(Head):
    """A head on one state per sequence: [CLS] for encoders, the last real token for decoders."""

    pool_last = False

    def bind(self, adapter) -> None:
        self.pool_last = getattr(adapter, "causal", False)


@HEADS.register("classification")
class ClassificationHead(PooledHead):
    """Linear on the first ([CLS]) token, or a decoder's last real token: logits [B, num_labels];
    batch["labels"] [B]."""

    def forward(self, hidden, batch):
        return self.out(self.dropout(pooled(hidden, batch, self.pool_last)))

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


@HEADS.register("token")
class TokenClassificationHead(Head):
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
class MultipleChoiceHead(PooledHead):
    """One score per choice from its [CLS] (a decoder: its last real token): inputs [B, C, L] ->
    logits [B, C]; batch["labels"] [B]."""

    @staticmethod
    def width(num_labels):
        return 1

    def forward(self, hidden, batch):
        num_choices = batch["input_ids"].shape[1]
        return self.out(self.dropout(pooled(hidden, batch, self.pool_last))).view(-1, num_choices)

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
        self._lm_logits = None

    @staticmethod
    def width(num_labels):
        return 0

    def bind(self, adapter) -> None:
        self._embeddings = adapter.word_embeddings  # a method, not a module: no second owner of the weight
        # a decoder scores the candidates as the NEXT token after its last real token, through its LM head
        self._lm_logits = _loaded_lm_head(adapter, "cloze") if getattr(adapter, "causal", False) else None

    def forward(self, hidden, batch):
        if self._lm_logits is not None:
            logits = self._lm_logits(pooled(hidden, batch, last=True)).float()  # [B, vocab]
            return logits.gather(1, batch["candidate_ids"])
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        at_mask = hidden[rows, batch["mask_positions"]]  # [B, h]
        candidates = self._embeddings()(batch["candidate_ids"])  # [B, C, h]
        # in fp32: verbalizer logits differ by less than bf16 resolves at their magnitude (8 bits)
        return torch.einsum("bh,bch->bc", at_mask.float(), candidates.float())

    def loss(self, logits, batch):
        return F.cross_entropy(logits.float(), batch["labels"])


@HEADS.register("lm")
class LMHead(Head):
    """Causal language modelling through the decoder's own (frozen) LM head; no parameters of its
    own. logits [B, L, vocab]; batch["labels"] [B, L] holds the token ids to predict (the response
    tokens and EOS) and -100 elsewhere (prompt, padding): position t is scored on predicting the
    label at t + 1, so only response tokens carry loss. Generation (``engine/generate.py``) reads
    the same LM head at the last position."""

    def __init__(self, hidden: int, num_labels: int = 0, dropout: float = 0.1):
        nn.Module.__init__(self)
        self.num_labels = num_labels
        self._lm_logits = None

    @staticmethod
    def width(num_labels):
        return 0

    def bind(self, adapter) -> None:
        if not hasattr(adapter, "lm_logits"):
            raise ConfigError(f"task head lm: backbone family {adapter.family!r} has no LM head (the lm head and "
                              f"generation need a decoder: model.family=decoder)")
        self._lm_logits = _loaded_lm_head(adapter, "lm")  # a method, not a module: no second owner of the weight

    def forward(self, hidden, batch):
        return self._lm_logits(hidden)

    def loss(self, logits, batch):
        shifted = logits[:, :-1].float().flatten(0, 1)
        return F.cross_entropy(shifted, batch["labels"][:, 1:].flatten(), ignore_index=IGNORE)


def _loaded_lm_head(adapter, head: str):
    """``adapter.lm_logits``, refused before any step when the checkpoint had no LM head weights."""
    if not getattr(adapter, "lm_head_loaded", True):
        raise ConfigError(f"task head {head}: model.path has no LM head weights (saved without them); this head "
                          f"scores through the LM head, which would be random and frozen: use a checkpoint that "
                          f"has it, or a task with a head of its own")
    return adapter.lm_logits

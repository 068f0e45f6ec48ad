"""What a prompt method needs to know about a backbone (filled by the backbone adapter)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class BackboneSpec:
    family: str
    num_layers: int
    hidden: int
    num_heads: int
    max_positions: int
    init_std: float = 0.02
    kv_heads: int | None = None
    """Key/value heads (grouped-query attention: fewer than ``num_heads``); None = ``num_heads``."""
    head_size: int | None = None
    """Width of one attention head when it is not ``hidden // num_heads`` (Qwen3, GLM-4); None = that."""

    def as_dict(self) -> dict:
        """The fields as saved in artifacts; the grouped-query fields only when set, so an encoder's
        spec reads as it always did (``BackboneSpec(**d)`` restores either)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in ("kv_heads", "head_size")}

    @property
    def head_dim(self) -> int:
        return self.head_size or self.hidden // self.num_heads

    @property
    def num_kv_heads(self) -> int:
        return self.kv_heads or self.num_heads

    @property
    def kv_width(self) -> int:
        """Values one prefix token holds per layer for its key (and as many for its value):
        ``kv_heads x head_dim`` (= ``hidden`` without grouped-query attention)."""
        return self.num_kv_heads * self.head_dim

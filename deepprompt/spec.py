"""What a prompt method needs to know about a backbone (filled by the backbone adapter)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    family: str
    num_layers: int
    hidden: int
    num_heads: int
    max_positions: int
    init_std: float = 0.02

    @property
    def head_dim(self) -> int:
        return self.hidden // self.num_heads

"""What a GPU user reads first: tokens per second, FLOPs per token, achieved TFLOP/s per device, MFU.

FLOPs per training token (docs/throughput.md derives them), with N the backbone's matmul
parameters (everything but its embedding tables), L layers, h hidden, s the mean real length of a
training sequence and P the prefix length:

- linear layers: forward 2N; backward 2N for the input gradients (a frozen backbone: no weight
  gradients) or 4N (finetune: input and weight gradients); activation checkpointing recomputes the
  forward (+2N). A frozen backbone is 4N, finetune 6N, each +2N with checkpointing. Backward stops
  at the lowest layer with a trainable prefix (``prompt.layers``), so only that share of the
  layers pays the backward.
- attention scores and the weighted sum: 4·L·h·(s + P) forward, twice that backward,
  once more with checkpointing.

Only real (non-pad) training tokens are counted, so MFU is useful work: padding lowers it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from torch import nn

# dense bf16 tensor-core peaks (vendor datasheets, SXM parts), TFLOP/s; matched against the device name
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def default_peak_tflops(device_name: str | None, precision: str) -> float | None:
    """The datasheet bf16 peak of a known GPU; None for a CPU, an unknown device or fp32 training."""
    if not device_name or precision not in ("bf16", "fp16"):
        return None
    if "H100" in device_name and "PCIe" in device_name:
        return 756.0
    return next((tf for key, tf in PEAK_BF16_TFLOPS.items() if key in device_name), None)


def matmul_params(backbone: nn.Module) -> int:
    """N: the backbone's parameters outside embedding tables (ZeRO-3's full sizes)."""
    embedding = {id(p) for m in backbone.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    return sum(getattr(p, "ds_numel", p.numel()) for p in backbone.parameters() if id(p) not in embedding)


@dataclass(frozen=True)
class FlopsModel:
    n_matmul: int
    num_layers: int
    hidden: int
    prefix_length: int
    """Keys each token attends to besides the sequence (P for a deep prefix, 0 otherwise; an input
    prompt lengthens the sequence itself)."""
    finetune: bool
    checkpointing: bool
    backward_layers: int
    """Layers the backward runs through (from the top down to the lowest trainable prefix)."""

    def per_token(self, mean_length: float) -> float:
        share = self.backward_layers / self.num_layers
        fwd = 2 * self.n_matmul
        bwd = (4 if self.finetune else 2) * self.n_matmul * share
        linear = fwd + bwd + (fwd if self.checkpointing else 0)
        attn_fwd = 4 * self.num_layers * self.hidden * (mean_length + self.prefix_length)
        attn = attn_fwd + 2 * attn_fwd * share + (attn_fwd if self.checkpointing else 0)
        return linear + attn


class Meter:
    """Tokens and wall time of training steps only: the first ``skip`` steps of this process
    (allocator and kernel warm-up) and every pause (evaluation, checkpoints) are left out. The
    caller synchronises the device at ``start``/``pause`` so queued work lands on the right side."""

    def __init__(self, first_step: int, skip: int):
        self.first_counted = first_step + skip  # steps after this one are counted
        self.tokens = self.rows = self.steps = 0
        self.seconds = 0.0
        self._t0: float | None = None

    def running(self) -> bool:
        return self._t0 is not None

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def pause(self) -> None:
        if self._t0 is not None:
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None

    def add(self, step: int, tokens: float, rows: float) -> None:
        """Step ``step``'s real tokens and sequences over all ranks (read one step late)."""
        if step > self.first_counted:
            self.tokens += tokens
            self.rows += rows
            self.steps += 1

    def report(self, flops: FlopsModel | None, world: int, peak_tflops: float | None) -> dict:
        if not self.steps or self.seconds <= 0:
            return {"tokens_per_s": None, "step_time_s": None, "steps_timed": 0, "flops_per_token": None,
                    "achieved_tflops_per_device": None, "mfu": None, "peak_tflops": peak_tflops}
        tokens_per_s = self.tokens / self.seconds
        mean_length = self.tokens / max(self.rows, 1)
        per_token = flops.per_token(mean_length) if flops else None
        achieved = tokens_per_s * per_token / world / 1e12 if per_token else None
        return {"tokens_per_s": tokens_per_s, "step_time_s": self.seconds / self.steps, "steps_timed": self.steps,
                "mean_sequence_tokens": mean_length, "flops_per_token": per_token,
                "achieved_tflops_per_device": achieved,
                "mfu": achieved / peak_tflops if achieved is not None and peak_tflops else None,
                "peak_tflops": peak_tflops}

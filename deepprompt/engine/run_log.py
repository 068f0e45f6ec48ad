"""What a run records as it goes: TensorBoard scalars, the progress carried from step to step (into
every checkpoint), output_dir/train_log.jsonl, and the per-step record read one step late."""
from __future__ import annotations

import json
import os
from pathlib import Path

from deepprompt.engine import comm


class Scalars:
    """TensorBoard on rank 0 (a no-op elsewhere)."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(output_dir / "tensorboard"))

    def add(self, tag: str, value: float, step: int) -> None:
        if self.writer:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer:
            self.writer.close()


class Progress:
    """What the loop carries from step to step; all of it goes into a checkpoint."""

    def __init__(self):
        self.best = {"value": None, "step": None, "dev": None, "test": None}
        self.history: list[dict] = []
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.evals_without_improvement = 0  # early stopping's count; a resumed run continues it
        self.stopped_early: dict | None = None  # {"step", "reason"} once patience ran out

    def state_dict(self) -> dict:
        return dict(vars(self))

    def load_state_dict(self, state: dict) -> None:
        vars(self).update(state)


class StepRecord:
    """One optimizer step as the host learns it: its number, task, learning rate, and the reduced
    [loss, tokens, sequences, stop, timed save] on their way from the device."""

    def __init__(self, step: int, task: str, lr: float, reduced: comm.HostCopy):
        self.step, self.task, self.lr, self.reduced = step, task, lr, reduced


def warmup_steps(steps: int) -> int:
    """Steps left out of the throughput figures (allocator and kernel warm-up): 3 of a long run,
    fewer of a short one, none of a 1-step run."""
    return min(3, steps // 4)


class TrainLog:
    """output_dir/train_log.jsonl: one line per optimizer step (rank 0); eval_log.jsonl: one line per
    dev evaluation. A resumed run drops the lines after its checkpoint's step, so the file always
    tells one consistent history."""

    def __init__(self, path: Path, start_step: int, enabled: bool):
        self.path, self.enabled = path, enabled
        if enabled:
            kept = []
            if start_step and path.is_file():
                kept = [l for l in path.read_text(errors="replace").splitlines() if _logged_step(l) <= start_step]
            path.write_text("".join(l + "\n" for l in kept))

    def write(self, step: int, loss: float, lr: float, task: str | None = None) -> None:
        self.write_record({"step": step, "loss": loss, "lr": lr, **({"task": task} if task else {})})

    def write_record(self, record: dict) -> None:
        if self.enabled:
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")


def _logged_step(line: str) -> float:
    """The step of a train_log.jsonl line; infinity (dropped on resume) for a blank line or one torn
    by a kill in mid-write, which would otherwise stop the resume with a JSON traceback."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return float("inf")


def progress_bar(total: int, enabled: bool, initial: int = 0):
    """A tqdm bar on rank 0 when stderr is a terminal; disabled otherwise (plain log lines instead)."""
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc="train", disable=not (enabled and os.isatty(2)),
                dynamic_ncols=True)


def hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"

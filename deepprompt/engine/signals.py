"""Preemption: SIGTERM / SIGUSR1 (what SLURM and the DeepSpeed launcher send; the launcher
SIGKILLs ~30 s later) and SIGINT only set a flag. The trainer checks it after every optimizer step,
with one all-reduce so that every rank stops at the SAME step, saves, and exits with
``EXIT_PREEMPTED``."""
from __future__ import annotations

import logging
import signal

log = logging.getLogger("deepprompt")
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later" — re-running the same command resumes
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class StopFlag:
    def __init__(self):
        self.signum: int | None = None
        self._previous = {}

    def install(self) -> "StopFlag":
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            log.warning("received %s: finishing this step, saving, then exiting (resumable)",
                        signal.Signals(signum).name)
        self.signum = signum

    @property
    def raised(self) -> bool:
        return self.signum is not None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

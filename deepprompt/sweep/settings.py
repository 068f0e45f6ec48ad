"""What one sweep is: ``SweepConfig`` (the command's settings, checked against the run config before
any trial) and the names of a configuration's runs."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from deepprompt.errors import ConfigError
from deepprompt.sweep import runs as R
from deepprompt.sweep.space import Dimension, check_against, parse_space

OWNED_KEYS = ("train.seed", "task.fold", "task.folds", "output_dir")
"""Set by the sweep itself (--seeds, --folds, the run directories), never by --space or overrides."""
CONFIRMATION = {"confirm_seeds": [], "confirm_top": 1, "confirm_overrides": []}
"""The settings of the confirmation, with their defaults: stored in sweep.json, but not part of the
definition workers must agree on (``SweepConfig.settle_confirmation``)."""

@dataclass
class SweepConfig:
    dir: str = "runs/sweep"
    """The sweep directory: study.journal, sweep.json, runs/, confirm/, report/ (shared by all workers)."""
    config: str | None = None
    """Base run config (None = the embedded default)."""
    overrides: list[str] = field(default_factory=list)
    """key=value overrides of every run."""
    space: list[str] = field(default_factory=list)
    """``key=distribution(args)`` per searched key (space.py)."""
    seeds: list[int] = field(default_factory=lambda: [42])
    """Every configuration runs with each seed."""
    folds: int | None = None
    """k: every configuration runs on each fold of the task's k-fold re-split (task.folds); None = the task's splits."""
    trials: int = 20
    """Trials of the whole sweep (all workers together; pruned ones count)."""
    select: str = "last"
    """Which dev score a trial's value is: ``last`` (the model after the last step) or ``best_dev``."""
    sampler: str = "tpe"
    """tpe | random."""
    sampler_seed: int = 0
    """Seed of the sampler (one worker: the same trials on a re-run)."""
    startup_trials: int = 5
    """TPE: random trials before the model-based ones."""
    prune: bool = True
    """Percentile pruner: stop a run whose best dev so far is below ``prune_percentile`` of the complete
    trials' dev at that step."""
    prune_percentile: float = 50.0
    """50 = Optuna's median pruner. Lower prunes less: 25 stops only trials in the bottom quarter at
    that step, which on a small, noisy dev set keeps a good configuration from being stopped by noise."""
    prune_startup: int = 3
    """Trials that complete before any pruning."""
    prune_warmup: int = 0
    """No pruning before this training step of a trial's first run."""
    confirm_seeds: list[int] | None = None
    """Fresh seeds the winner(s) are re-run with over all folds; must not be among ``seeds``.
    None (as the other two ``confirm_*``): as stored in the sweep's sweep.json (none for a new sweep)."""
    confirm_top: int | None = None
    """How many of the best trials (by dev) are confirmed; the final choice among them is by dev too (1)."""
    confirm_overrides: list[str] | None = None
    """key=value overrides of the confirmation runs only (e.g. train.max_steps=600: screen short, confirm long)."""
    ranks: int = 1
    """Ranks per run on this machine (ignored with deepspeed_args)."""
    deepspeed_args: list[str] | None = None
    """The deepspeed launcher's own arguments instead of the local ones (e.g. --hostfile ...)."""
    ds_config: str = str(R.REPO / "ds_configs" / "zero3.json")
    stale_after_min: float = 15.0
    """A RUNNING trial whose worker has not been heard from for this long is handed back."""
    report_only: bool = False
    """Write the report from the study as it stands; run nothing."""

    def settle_confirmation(self, stored: dict | None) -> dict[str, tuple]:
        """Fill the ``confirm_*`` settings this command left out (None) from ``stored`` (the sweep's
        sweep.json; defaults without one) and return ``{key: (stored, this command's)}`` for those it
        changes. The confirmation is not part of what a trial means, so a sweep that is under way may
        be given one, or a different one, later (screen first, decide on the confirmation after)."""
        changed = {}
        for key, default in CONFIRMATION.items():
            before = (stored or {}).get(key, default)
            if getattr(self, key) is None:
                setattr(self, key, before)
            elif stored is not None and getattr(self, key) != before:
                changed[key] = (before, getattr(self, key))
        return changed

    def definition(self) -> dict:
        """What sweep.json holds: what every worker of one sweep directory must agree on (all but
        ``CONFIRMATION``), and the confirmation."""
        cfg_text = Path(self.config).read_bytes() if self.config else b""
        return {"config": self.config, "config_sha256": hashlib.sha256(cfg_text).hexdigest()[:16],
                "overrides": self.overrides, "space": self.space, "seeds": self.seeds, "folds": self.folds,
                "select": self.select, "confirm_seeds": self.confirm_seeds, "confirm_top": self.confirm_top,
                "confirm_overrides": self.confirm_overrides}

    def check(self) -> list[Dimension]:
        self.settle_confirmation(None)  # a no-op after Sweep settled it against sweep.json
        if self.trials < 1:
            raise ConfigError(f"--trials: must be >= 1, got {self.trials}")
        if not self.seeds:
            raise ConfigError("--seeds: at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"--seeds: a seed is listed twice: {self.seeds}")
        if self.folds is not None and self.folds < 2:
            raise ConfigError(f"--folds: must be >= 2, got {self.folds}")
        if self.select not in R.WHICH:
            raise ConfigError(f"--select: last or best_dev, got {self.select!r}")
        if self.sampler not in ("tpe", "random"):
            raise ConfigError(f"--sampler: tpe or random, got {self.sampler!r}")
        if not 0 < self.prune_percentile < 100:
            raise ConfigError(f"--prune-percentile: must be in (0, 100), got {self.prune_percentile}")
        if self.ranks < 1:
            raise ConfigError(f"--ranks: must be >= 1, got {self.ranks}")
        for flag, count in (("--startup-trials", self.startup_trials), ("--prune-startup", self.prune_startup),
                            ("--prune-warmup", self.prune_warmup)):
            if count < 0:
                raise ConfigError(f"{flag}: must be >= 0, got {count}")
        if not 0 < self.stale_after_min < float("inf"):
            raise ConfigError(f"--stale-after: must be a positive number of minutes, got {self.stale_after_min}")
        both = sorted(set(self.seeds) & set(self.confirm_seeds))
        if both:
            raise ConfigError(f"--confirm-seeds: {both} also searched with (--seeds); confirmation needs fresh seeds")
        if self.confirm_top < 1:
            raise ConfigError(f"--confirm-top: must be >= 1, got {self.confirm_top}")
        if self.config and not Path(self.config).is_file():
            raise ConfigError(f"--config: file not found: {self.config}")
        if not Path(self.ds_config).is_file():
            raise ConfigError(f"--ds_config: file not found: {self.ds_config}")
        if not self.space and not self.report_only:
            raise ConfigError("--space: give at least one searched key, e.g. --space 'train.lr=loguniform(3e-3,1e-1)'")
        dims = parse_space(self.space)
        from deepprompt.config import flatten, parse_overrides

        for flag, items in (("overrides", self.overrides), ("--confirm-set", self.confirm_overrides)):
            for item in items:  # as a dotted key or inside a section: train={seed: 3}
                owned = [k for k in flatten(parse_overrides([item])) if k in OWNED_KEYS]
                if owned:
                    raise ConfigError(f"{flag}: {owned[0]} is set by the sweep (--seeds, --folds, --dir)")
        for d in dims:
            if d.key in OWNED_KEYS:
                raise ConfigError(f"--space {d.text!r}: {d.key} is set by the sweep (--seeds, --folds, --dir)")
        from deepprompt.config import load_config
        from deepprompt.engine.preflight import check_names

        def load(extra: list[str]):  # what a trial's start-up would refuse, refused before any trial
            run = load_config(self.config, [*self.overrides, *extra, *R.run_overrides(self.folds, 0, self.seeds[0])])
            check_names(run)
            return run
        load([])
        load(self.confirm_overrides)
        check_against(dims, load)
        return dims

    def plan(self, seeds: list[int]) -> list[tuple[int | None, int]]:
        return R.plan(self.folds, seeds)

    def launch(self) -> R.Launch:
        return R.Launch(config=self.config, overrides=tuple(self.overrides), ds_config=self.ds_config,
                        ranks=self.ranks, deepspeed_args=tuple(self.deepspeed_args) if self.deepspeed_args is not None
                        else None)


def config_id(params: dict) -> str:
    """The run directories of one configuration: the same parameters always land in the same place."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]


run_name = R.run_name


def param_overrides(dims: list[Dimension], params: dict) -> list[str]:
    return [d.override(params[d.key]) for d in dims]

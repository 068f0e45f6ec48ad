"""The ``sweep`` command's parser: flags -> a typed ``SweepConfig`` -> ``study.run_sweep``."""
from __future__ import annotations

import argparse
import shlex
import sys

from deepprompt.commands import COMMANDS, Command, Once
from deepprompt.errors import ConfigError


def _ints(flag: str):
    def parse(text: str) -> list[int]:
        try:
            return [int(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag}: comma-separated integers, got {text!r}") from None
    return parse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from deepprompt.sweep.runs import REPO

    p.add_argument("--dir", default="runs/sweep", action=Once, help="sweep directory, shared by all workers (default: %(default)s)")
    p.add_argument("--config", default=None, action=Once, help="base run config (default: the embedded default)")
    p.add_argument("--ds_config", "--deepspeed", "--deepspeed_config", dest="ds_config", action=Once,
                   default=str(REPO / "ds_configs" / "zero3.json"), help="DeepSpeed JSON of every run")
    p.add_argument("--space", action="append", default=[], metavar="KEY=DIST(ARGS)",
                   help="a searched key (repeatable): loguniform(a,b), uniform(a,b), int(a,b), intlog(a,b), choice(v,...)")
    p.add_argument("--seeds", type=_ints("--seeds"), default=[42], help="seeds of every trial (default: 42)")
    p.add_argument("--folds", type=int, default=None, help="k-fold re-split of the task's data (task.folds); "
                   "every trial runs on every fold")
    p.add_argument("--trials", type=int, default=20, help="trials of the whole sweep, all workers together (default: 20)")
    p.add_argument("--select", choices=["last", "best_dev"], default="last",
                   help="the dev score a trial is ranked by: LAST or BEST-DEV (default: last)")
    p.add_argument("--sampler", choices=["tpe", "random"], default="tpe")
    p.add_argument("--sampler-seed", type=int, default=0)
    p.add_argument("--startup-trials", type=int, default=5, help="TPE: random trials first (default: 5)")
    p.add_argument("--no-prune", dest="prune", action="store_false", help="no pruning")
    p.add_argument("--prune-percentile", type=float, default=50.0, help="stop a trial below this percentile of the "
                   "complete trials' dev at the same step (default: 50, the median; 25: only the bottom quarter)")
    p.add_argument("--prune-startup", type=int, default=3, help="complete trials before any pruning (default: 3)")
    p.add_argument("--prune-warmup", type=int, default=0, help="no pruning before this step of a trial's first run")
    # the confirmation's flags default to the sweep's stored ones: they may be added to a sweep under way
    p.add_argument("--confirm-seeds", type=_ints("--confirm-seeds"), default=None,
                   help="fresh seeds the best trial(s) are re-run with over all folds at the end "
                        "(default: as the sweep was last given, none for a new sweep)")
    p.add_argument("--confirm-top", type=int, default=None, help="how many of the best trials are confirmed "
                   "(default: as the sweep was last given, 1 for a new sweep)")
    p.add_argument("--confirm-set", action="append", default=None, metavar="KEY=VALUE",
                   help="override of the confirmation runs only, e.g. train.max_steps=600 (repeatable; default: "
                        "as the sweep was last given)")
    p.add_argument("--ranks", type=int, default=1, help="ranks per run on this machine (default: 1)")
    p.add_argument("--deepspeed-args", default=None, help="the deepspeed launcher's arguments instead of the local "
                   "ones, e.g. '--hostfile hostfile --master_addr node0' (any world size)")
    p.add_argument("--stale-after", type=float, default=15.0, help="minutes without a heartbeat before a trial of a "
                   "lost worker is handed back (default: 15)")
    p.add_argument("--report-only", action="store_true", help="write the report from the study as it stands")
    p.add_argument("overrides", nargs="*", help="key=value overrides of every run, e.g. train.max_steps=300")


def to_config(args: argparse.Namespace):
    from deepprompt.sweep.study import SweepConfig

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise ConfigError(f"override {bad[0]!r}: expected key=value (e.g. train.max_steps=300)")
    try:
        deepspeed_args = shlex.split(args.deepspeed_args) if args.deepspeed_args is not None else None
    except ValueError as e:  # shlex: "No closing quotation", "No escaped character"
        raise ConfigError(f"--deepspeed-args {args.deepspeed_args!r}: {str(e).lower()}") from None
    return SweepConfig(dir=args.dir, config=args.config, overrides=list(args.overrides), space=list(args.space),
                       seeds=args.seeds, folds=args.folds, trials=args.trials, select=args.select,
                       sampler=args.sampler, sampler_seed=args.sampler_seed, startup_trials=args.startup_trials,
                       prune=args.prune, prune_percentile=args.prune_percentile,
                       prune_startup=args.prune_startup, prune_warmup=args.prune_warmup,
                       confirm_seeds=args.confirm_seeds, confirm_top=args.confirm_top,
                       confirm_overrides=args.confirm_set, ranks=args.ranks,
                       deepspeed_args=deepspeed_args,
                       ds_config=args.ds_config, stale_after_min=args.stale_after, report_only=args.report_only)


def run(args: argparse.Namespace) -> None:
    from deepprompt.sweep.study import EXIT_INTERRUPTED, Interrupted, run_sweep

    try:
        run_sweep(to_config(args))
    except Interrupted as e:
        print(f"deepprompt: {e}", file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)


COMMANDS.register("sweep")(Command(
    help="hyper-parameter search on Optuna: every trial real runs (folds x seeds), pruning, an honest report",
    usage="""Search run-config keys on top of a base config; every trial is real launcher runs.

    deepprompt sweep --dir runs/sweep_wnut16 [--config launcher/configs/wnut16.yaml] \\
        --space 'train.lr=loguniform(3e-3,1e-1)' --space 'prompt.length=choice(16,32,64,128)' \\
        --space 'prompt.reparam=choice(false,true)' --seeds 42,43,44 [--folds 3] --trials 24 \\
        [--ranks 2 | --deepspeed-args '--hostfile hostfile'] [--confirm-seeds 45,46,47] [key=value ...]

Several workers (on several nodes) run the same command on one shared --dir and split the trials;
a stopped sweep continues when the command is run again. The last worker confirms the best trial(s)
on --confirm-seeds and writes <dir>/report/ (report.md, report.json, plots, winner.yaml). docs/sweep.md.""",
    add_arguments=add_arguments, run=run))

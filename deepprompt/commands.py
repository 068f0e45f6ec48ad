"""The ``train``, ``evaluate`` and ``predict`` commands: ONE argument parser each, shared by the
installed ``deepprompt <command>`` (``__main__.py``) and the thin ``launcher/*.py`` scripts that the
``deepspeed`` launcher starts on every node, and the one library call each makes.

``--deepspeed`` and ``--deepspeed_config`` are accepted for ``--ds_config``: the spellings of
HF Trainer and of DeepSpeed's own examples.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass

from deepprompt.registry import Registry

DS_CONFIG_FLAGS = ("--ds_config", "--deepspeed", "--deepspeed_config")


@dataclass(frozen=True)
class Command:
    help: str
    """One line for ``deepprompt -h``."""
    usage: str
    """The command's ``-h`` text: how it is started and what it writes."""
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    """Called with the parsed arguments: the library call (imports stay inside: ``-h`` is instant)."""


COMMANDS: Registry[Command] = Registry("command")


def parser(name: str, prog: str | None = None) -> argparse.ArgumentParser:
    """The command's parser (what a launcher script parses its arguments with)."""
    cmd = COMMANDS.get(name)
    p = argparse.ArgumentParser(prog=prog, description=cmd.usage, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmd.add_arguments(p)
    return p


def add_subcommands(sub) -> None:
    """Every command as a subcommand of ``deepprompt`` (an ``add_subparsers`` object)."""
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.usage,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_arguments(p)


def main(name: str, argv: list[str] | None = None, prog: str | None = None) -> None:
    """Parse ``argv`` (default: this process's arguments) with command ``name``'s parser and run it.
    Overrides may stand before, between and after the flags (``train.lr=0.1 --config x.yaml
    train.seed=3``): argparse's plain ``parse_args`` would take the first run of them only and
    refuse the rest as "unrecognized arguments"."""
    COMMANDS.get(name).run(parser(name, prog).parse_intermixed_args(sys.argv[1:] if argv is None else argv))


class Once(argparse.Action):
    """A flag that may be given once: a second ``--config`` (or ``--deepspeed`` after ``--ds_config``)
    would otherwise replace the first without a word."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = f"_{self.dest}_given"
        if getattr(namespace, given, None):
            raise argparse.ArgumentError(self, f"given twice ({getattr(namespace, given)} {getattr(namespace, self.dest)}, "
                                               f"then {option_string} {values}); give it once")
        setattr(namespace, self.dest, values)
        setattr(namespace, given, option_string)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _ds_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(*DS_CONFIG_FLAGS, dest="ds_config", default="ds_configs/zero3.json", action=Once,
                   help="DeepSpeed JSON (default: %(default)s)")


def _launched_by_deepspeed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by deepspeed


def _overrides(p: argparse.ArgumentParser, example: str) -> None:
    p.add_argument("overrides", nargs="*", help=f"dotted key=value overrides, e.g. {example}")


# ------------------------------------------------------------------------------ train

def _train_arguments(p: argparse.ArgumentParser) -> None:
    _ds_config(p)
    p.add_argument("--config", default=None, action=Once, help="run config (YAML or JSON); default: the embedded "
                   "default")
    _launched_by_deepspeed(p)
    _overrides(p, "prompt.length=32")


def _train(args: argparse.Namespace) -> None:
    from deepprompt.config import load_config
    from deepprompt.engine.trainer import train

    train(load_config(args.config, args.overrides), args.ds_config)


COMMANDS.register("train")(Command(
    help="train prompts on a frozen backbone under DeepSpeed",
    usage="""Train prompts on a frozen backbone under DeepSpeed.

    deepspeed --hostfile hostfile launcher/train.py --ds_config ds_configs/zero3.json \\
        [--config launcher/configs/wnut16.yaml] [key=value ...]
    deepprompt train --ds_config ds_configs/zero3.json ...     (one rank, or under torchrun/srun/mpirun)

With no --config this is the embedded default: P-Tuning v2 on all-MiniLM-L6-v2 for WNUT-16 NER.""",
    add_arguments=_train_arguments, run=_train))


# ------------------------------------------------------------------------------ evaluate

def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", required=True, help="artifact directory or its prompts.json")
    _ds_config(p)
    p.add_argument("--splits", default="", help="comma-separated splits to score (default: every split of the "
                   "task but train, e.g. dev only for SuperGLUE's unlabelled test)")
    _launched_by_deepspeed(p)
    _overrides(p, "task.data_dir=data/")


def _evaluate(args: argparse.Namespace) -> None:
    from deepprompt.engine.inference import evaluate_artifact

    evaluate_artifact(args.artifact, args.ds_config, args.overrides, tuple(s for s in args.splits.split(",") if s))


COMMANDS.register("evaluate")(Command(
    help="score a saved prompt artifact on its task's splits (any number of ranks)",
    usage="""Evaluate a saved prompt artifact (prompts.json + prompts.safetensors) on its task's splits.

    deepspeed --hostfile hostfile launcher/evaluate.py --artifact runs/x/artifact \\
        --ds_config ds_configs/zero3.json [--splits dev,test] (default: every split but train) [key=value ...]
    deepprompt evaluate --artifact runs/x/artifact ...

The run config is the one stored in the artifact; overrides change it (task.data_dir=..., a moved
backbone: model.path=..., where the results go: output_dir=...). Works on any number of ranks;
writes <output_dir>/eval_results.json.""",
    add_arguments=_evaluate_arguments, run=_evaluate))


# ------------------------------------------------------------------------------ predict

def _predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--artifact", action="append", required=True, help="artifact directory (repeatable)")
    p.add_argument("--input", required=True, help="JSONL: one {\"task\", \"text\" | \"words\"} per line")
    p.add_argument("--output", default="-", help="JSONL predictions (default: stdout)")
    p.add_argument("--batch_size", type=positive_int, default=32)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--model_path", default=None, help="the backbone, if it moved since training")


def output_file(text: str):
    """``--output`` as the path the predictions go to (None: stdout), its directory made; checked
    before any model loads, so a directory in its place or a file in its path is one line then."""
    from pathlib import Path

    from deepprompt.errors import ConfigError
    from deepprompt.fileio import make_output_dir

    if text == "-":
        return None
    out = Path(text)
    if out.is_dir():
        raise ConfigError(f"--output: {out} is a directory; give the path of the predictions file")
    make_output_dir(out.parent, "the predictions (--output)")
    return out


def _predict(args: argparse.Namespace) -> None:
    import json

    import torch

    from deepprompt.artifacts import load_artifact
    from deepprompt.cli import setup_logging
    from deepprompt.engine.serving import build_server, predict, read_jsonl
    from deepprompt.fileio import atomic_write

    setup_logging(0)
    rows, out = read_jsonl(args.input), output_file(args.output)  # before the backbone loads
    server = build_server([load_artifact(a) for a in args.artifact], args.model_path, args.device,
                          getattr(torch, args.dtype))
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in predict(server, rows, args.batch_size)]
    if out is None:
        sys.stdout.writelines(lines)
    else:  # whole or not at all: a reader never sees half the predictions
        atomic_write(out, lambda p: p.write_text("".join(lines), encoding="utf-8"))


COMMANDS.register("predict")(Command(
    help="predict from raw JSONL with one or several artifacts of one backbone (one process)",
    usage="""Predict from raw text with one or several prompt artifacts made on the same backbone.

    python launcher/predict.py --artifact runs/ner/artifact [--artifact runs/other/artifact ...] \\
        --input in.jsonl [--output out.jsonl] [--batch_size 32] [--device cpu] [--model_path DIR]
    deepprompt predict --artifact ... --input in.jsonl ...

Each input line is {"task": "<task name>", "text": "..."} or {"task": ..., "words": [...]} (QA:
{"task": "squad", "question": ..., "context": ...}), no blank line between two; output line N is
input line N plus the prediction (token tasks: "words" and one tag per word in "tags"; QA:
"answer", "answer_start", "score"). Inputs cut to the task's length limits are counted in the log.
Batches mix tasks: one backbone forward serves every artifact. One process, no DeepSpeed.""",
    add_arguments=_predict_arguments, run=_predict))

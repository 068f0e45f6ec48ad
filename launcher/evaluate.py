#!/usr/bin/env python
"""Evaluate a saved prompt artifact (prompts.json + prompts.safetensors) on its task's splits.

    deepspeed --hostfile hostfile launcher/evaluate.py --artifact runs/x/artifact \
        --ds_config ds_configs/zero3.json [--splits dev,test] (default: every split but train) [key=value ...]

The run config is the one stored in the artifact; overrides change it (task.data_dir=..., a moved
backbone: model.path=..., where the results go: output_dir=...). Works on any number of ranks;
writes <output_dir>/eval_results.json.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepprompt.cli import run_user_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", required=True, help="artifact directory or its prompts.json")
    parser.add_argument("--ds_config", default="ds_configs/zero3.json", help="DeepSpeed JSON")
    parser.add_argument("--splits", default="", help="comma-separated splits to score (default: every split "
                        "of the task but train, e.g. dev only for SuperGLUE's unlabelled test)")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by deepspeed
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. task.data_dir=data/")
    args = parser.parse_args()

    from deepprompt.engine.inference import evaluate_artifact

    splits = tuple(s for s in args.splits.split(",") if s)
    evaluate_artifact(args.artifact, args.ds_config, args.overrides, splits)


if __name__ == "__main__":
    run_user_errors(main)

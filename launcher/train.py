#!/usr/bin/env python
"""Train prompts on a frozen backbone under DeepSpeed.

    deepspeed --hostfile hostfile launcher/train.py --ds_config ds_configs/zero3.json \
        [--config launcher/configs/wnut16.yaml] [key=value ...]

With no --config this is the embedded default: P-Tuning v2 on all-MiniLM-L6-v2 for WNUT-16 NER.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepprompt.cli import run_user_errors  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ds_config", default="ds_configs/zero3.json", help="DeepSpeed JSON")
    parser.add_argument("--config", default=None, help="run config (YAML or JSON); default: the embedded default")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # set by deepspeed
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. prompt.length=32")
    args = parser.parse_args()

    from deepprompt.config import load_config
    from deepprompt.engine.trainer import train

    cfg = load_config(args.config, args.overrides)
    train(cfg, args.ds_config)


if __name__ == "__main__":
    run_user_errors(main)

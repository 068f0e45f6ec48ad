#!/usr/bin/env python
"""Evaluate a saved prompt artifact on its task's splits (``deepprompt evaluate`` is the same command).

    deepspeed --hostfile hostfile launcher/evaluate.py --artifact runs/x/artifact \
        --ds_config ds_configs/zero3.json [--splits dev,test] [key=value ...]

Arguments and their parser: ``deepprompt/commands.py``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepprompt.cli import run_user_errors  # noqa: E402
from deepprompt.commands import main  # noqa: E402

if __name__ == "__main__":
    run_user_errors(lambda: main("evaluate"))

#!/usr/bin/env python
"""Train prompts on a frozen backbone under DeepSpeed (``deepprompt train`` is the same command).

    deepspeed --hostfile hostfile launcher/train.py --ds_config ds_configs/zero3.json \
        [--config launcher/configs/wnut16.yaml] [key=value ...]

Arguments and their parser: ``deepprompt/commands.py``.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deepprompt.cli import run_user_errors  # noqa: E402
from deepprompt.commands import main  # noqa: E402

if __name__ == "__main__":
    run_user_errors(lambda: main("train"))

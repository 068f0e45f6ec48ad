"""Shared by the benchmark scripts: runs through the real launcher (reused when their results.json
exists), tables, JSON and plots under docs/benchmarks/. Launching runs and aggregating their scores
is ``deepprompt.sweep.runs``, the same code ``deepprompt sweep`` runs its trials with."""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout's deepprompt, also when it is not installed

from deepprompt.sweep import runs  # noqa: E402
from deepprompt.sweep.runs import free_port, mean_std  # noqa: E402,F401  (re-exported for the scripts)

LR = {"prefix": "1e-2", "prompt": "3e-2", "ptuning": "5e-3", "finetune": "5e-5"}
"""Each method's default learning rate in the benchmarks (prompts want 100-1000x fine-tuning's)."""


def method_run(runs: str, name: str, method: str, seed: int, steps: int, lr: str) -> tuple[Path, list[str]]:
    """The run directory and overrides of one (method, seed) at a fixed budget on the base recipe.
    quality.py and ablation.py both go through here, so the ablation's base point (default prompt
    length, every layer) IS the quality table's prefix run of the same seed, reused, not re-run."""
    return (REPO / runs / name / f"{method}-s{seed}-{steps}",
            [f"prompt.method={method}", f"train.lr={lr}", f"train.max_steps={steps}", f"train.seed={seed}"])


def launch(out: Path, overrides: list[str], ranks: int = 2, config: str | None = None,
           ds_config: str = "ds_configs/zero3.json", threads: int = 1) -> dict:
    """``deepspeed --num_gpus <ranks> launcher/train.py ...`` on this machine (CPU ranks, loopback,
    ``threads`` intra-op threads each), with ``output_dir=out``; returns its results.json (the run's
    output is in ``out/launch.log``)."""
    how = runs.Launch(config=config, ds_config=ds_config, cwd=str(REPO), env={"OMP_NUM_THREADS": str(threads)},
                      deepspeed_args=("--num_gpus", str(ranks), "--no_ssh_check", "--master_addr", "127.0.0.1",
                                      "--master_port", str(free_port())))
    if not (Path(out) / "results.json").is_file():
        print(f"run {out} (log: {Path(out) / 'launch.log'})", file=sys.stderr, flush=True)
    return runs.launch(how, Path(out), overrides)


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def write_json(name: str, payload: dict) -> Path:
    out = REPO / "docs" / "benchmarks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    return out


def print_table(head: tuple[str, ...], rows: list[tuple]) -> None:
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


def fmt_mean_std(ms: tuple[float, float], n: int) -> str:
    """``mean ± std`` over ``n`` seeds; just the value for one seed (its 0 std means nothing)."""
    return runs.fmt(ms, n)


def save_plot(name: str, draw) -> Path:
    """``draw(ax)`` on a fresh matplotlib figure, saved as docs/benchmarks/<name> (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    draw(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = REPO / "docs" / "benchmarks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out

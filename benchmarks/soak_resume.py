#!/usr/bin/env python
"""Soak test of preemption: N random kills (SIGTERM and SIGKILL mixed) during ONE training run, each
followed by a resume with the same command; the final prompts/heads and every per-step loss must
equal an uninterrupted run with the same seed.

Uses a tiny random BERT (tests/tiny.py) on the WNUT-16 fixture, 2 ranks through the DeepSpeed
launcher by default. Prints a table of the kills and writes docs/benchmarks/soak_resume.json.

    .venv/bin/python benchmarks/soak_resume.py [--kills 20] [--ranks 2] [--steps 240] [--seed 0]
"""
import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from deepprompt.engine import checkpoint  # noqa: E402
from tests.tiny import FIXTURES, save_tiny  # noqa: E402


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(model, out, ranks, steps):
    script = ["launcher/train.py", "--ds_config", "ds_configs/zero3.json", f"model.path={model}",
              f"task.data_dir={FIXTURES / 'wnut16'}", "prompt.length=4", "task.max_seq_length=32",
              f"train.max_steps={steps}", "train.batch_size=8", "train.micro_batch_size=4", "train.eval_every=0",
              "train.lr=3e-2", "train.save_every=7", f"output_dir={out}"]
    if ranks == 1:
        return [sys.executable, *script]
    return [str(REPO / ".venv/bin/deepspeed"), "--num_gpus", str(ranks), "--master_addr", "127.0.0.1",
            "--master_port", str(port()), *script]


def env():
    drop = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_SIZE", "MASTER_ADDR", "MASTER_PORT")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO)}


def steps_done(out: Path) -> int:
    log = out / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--steps", type=int, default=240)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="soak-"))
    model = save_tiny("bert", root / "bert")

    ref = root / "reference"
    t0 = time.time()
    subprocess.run(command(model, ref, args.ranks, args.steps), cwd=REPO, env=env(), check=True,
                   capture_output=True)
    ref_time = time.time() - t0

    out, kills = root / "soak", []
    while len(kills) < args.kills:
        sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
        before = steps_done(out)
        target = before + rng.randint(1, max(2, args.steps // (args.kills + 2)))
        proc = subprocess.Popen(command(model, out, args.ranks, args.steps), cwd=REPO, env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        while proc.poll() is None and steps_done(out) < target:
            time.sleep(0.02)
        if proc.poll() is not None:
            raise SystemExit(f"the run finished before kill {len(kills) + 1}; use more --steps")
        os.killpg(proc.pid, sig)
        proc.wait()
        time.sleep(0.5)  # let orphaned ranks of a SIGKILLed launcher die
        latest = checkpoint.find_latest(out)
        kills.append({"signal": signal.Signals(sig).name, "at_step": steps_done(out),
                      "resumes_from": int(latest.name.split("_")[1]) if latest else 0,
                      "preempted_marker": (out / "PREEMPTED").exists()})
        print(f"kill {len(kills):2d}: {kills[-1]['signal']:7s} at step {kills[-1]['at_step']:3d} "
              f"-> resumes from {kills[-1]['resumes_from']}", flush=True)
    t0 = time.time()
    subprocess.run(command(model, out, args.ranks, args.steps), cwd=REPO, env=env(), check=True,
                   capture_output=True)
    final_time = time.time() - t0

    ref_loss = [json.loads(l)["loss"] for l in (ref / "train_log.jsonl").read_text().splitlines()]
    got_loss = [json.loads(l)["loss"] for l in (out / "train_log.jsonl").read_text().splitlines()]
    a = load_file(str(checkpoint.find_latest(ref) / checkpoint.TENSORS))
    b = load_file(str(checkpoint.find_latest(out) / checkpoint.TENSORS))
    result = {"kills": kills, "ranks": args.ranks, "steps": args.steps, "kill_schedule_seed": args.seed,
              "losses_identical": ref_loss == got_loss, "steps_logged": len(got_loss),
              "final_state_bit_identical": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
              "reference_wall_s": ref_time, "last_resume_wall_s": final_time}
    print(f"\n{len(kills)} kills ({sum(k['signal'] == 'SIGTERM' for k in kills)} TERM, "
          f"{sum(k['signal'] == 'SIGKILL' for k in kills)} KILL) on {args.ranks} rank(s), {args.steps} steps")
    print(f"per-step losses identical to the uninterrupted run: {result['losses_identical']}")
    print(f"final prompts/heads/Adam state bit-identical:       {result['final_state_bit_identical']}")
    dest = REPO / "docs" / "benchmarks" / "soak_resume.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2))
    print(f"wrote {dest.relative_to(REPO)}")
    sys.exit(0 if result["losses_identical"] and result["final_state_bit_identical"] else 1)


if __name__ == "__main__":
    main()

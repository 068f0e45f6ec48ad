"""The GPU check in one call: the smoke of every entry point (benchmarks/gpu_smoke.py), then GLM
throughput at 2B and 10B shapes (benchmarks/gpu_throughput.py), combined into one JSON.

    python benchmarks/gpu_check.py --out OUT_DIR [--cpu]

``--cpu`` runs the same smoke here on gloo, and the throughput harness on a small GLM shape only
(GLM-2B/10B steps take minutes each on two cores), so everything up to the device call is proven
in CI's world. Writes OUT_DIR/gpu_check.json; prints one table. Exit 1 if a smoke check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# (name, preset, method, micro batch, checkpointing): 2B and 10B P-Tuning v2 at the largest micro batch
# the calculator fits, with and without activation checkpointing; finetune vs prefix at one micro batch
GPU_RUNS = [
    ("2b-prefix", "glm-xlarge", "prefix", "auto", False),
    ("2b-prefix-ckpt", "glm-xlarge", "prefix", "auto", True),
    ("2b-prefix-mb8", "glm-xlarge", "prefix", "8", False),
    ("2b-finetune-mb8", "glm-xlarge", "finetune", "8", False),
    ("10b-prefix", "glm-xxlarge", "prefix", "auto", False),
    ("10b-prefix-ckpt", "glm-xxlarge", "prefix", "auto", True),
]
CPU_RUNS = [("large-prefix-cpu", "glm-large", "prefix", "1", False),
            ("large-prefix-ckpt-cpu", "glm-large", "prefix", "1", True)]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def throughput(work: Path, runs, cpu: bool, budget_s: float) -> list[dict]:
    rows, deadline = [], time.time() + budget_s
    for name, preset, method, mb, ckpt in runs:
        for attempt in range(3):  # an out-of-memory retries with half the micro batch, in a new process
            if time.time() > deadline:
                rows.append({"name": name, "skipped": "time budget spent"})
                break
            out = work / f"tp-{name}.json"
            seq, steps = ("64", ["--warmup", "1", "--steps", "2"]) if cpu else ("512", ["--warmup", "2", "--steps", "4"])
            cmd = [sys.executable, "benchmarks/gpu_throughput.py", "--preset", preset, "--method", method, "--seq", seq,
                   "--micro-batch", mb, "--json", str(out), *steps, *(["--checkpointing"] if ckpt else [])]
            started = time.time()
            proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True,
                                  timeout=max(30.0, deadline - time.time()))
            row = json.loads(out.read_text()) if out.is_file() else {"error": (proc.stdout + proc.stderr)[-1500:]}
            row.update(name=name, rc=proc.returncode, wall_s=round(time.time() - started, 1))
            if proc.returncode == 3 and "oom" in row:
                chosen = next((l.split()[-1] for l in proc.stdout.splitlines() if l.startswith("micro batch ")), mb)
                mb = str(max(1, int(chosen) // 2))
                rows.append(row)
                continue
            rows.append(row)
            break
        print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    if "tokens_per_s" not in r:
        return f"{r['name']:<18} {r.get('skipped') or r.get('oom') or r.get('error', '')[-300:]}"
    mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
    mem = f"{r['peak_memory_mb'] / 1024:.1f}/{r['predicted_memory_mb'] / 1024:.1f} GiB" if r.get("peak_memory_mb") else "-"
    return (f"{r['name']:<18} mb {r['micro_batch']:>3} | {r['tokens_per_s']:>9.0f} tok/s | {r['step_time_s']:.3f} s/step"
            f" | {r['achieved_tflops_per_device']:.1f} TFLOP/s | MFU {mfu} | peak/predicted {mem}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu_check-"))
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--smoke-jobs", type=int, default=None)
    ap.add_argument("--throughput-budget-s", type=float, default=270.0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_work-"))  # only gpu_check.json goes to --out
    started = time.time()
    import torch

    versions = {"python": sys.version.split()[0], "torch": torch.__version__}
    from importlib.metadata import version

    for mod in ("transformers", "deepspeed", "datasets", "seqeval", "accelerate", "peft"):
        try:
            __import__(mod)
            versions[mod] = version(mod)
        except Exception as e:  # noqa: BLE001 - a missing or broken wheel is itself the finding
            versions[mod] = f"missing: {type(e).__name__}: {e}"
    print("versions:", versions, flush=True)
    jobs = args.smoke_jobs or (2 if args.cpu else 6)
    smoke = subprocess.run([sys.executable, "benchmarks/gpu_smoke.py", "--out", str(work / "smoke"), "--jobs", str(jobs)],
                           cwd=REPO, env=_env(), text=True)
    smoke_json = work / "smoke" / "gpu_smoke.json"
    smoke_rows = json.loads(smoke_json.read_text()) if smoke_json.is_file() else {"error": "smoke did not finish"}
    rows = throughput(work, CPU_RUNS if args.cpu else GPU_RUNS, args.cpu, args.throughput_budget_s)
    report = {"mode": "cpu" if args.cpu else "gpu", "versions": versions, "seconds": round(time.time() - started, 1),
              "smoke": smoke_rows, "throughput": rows}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"smoke: {smoke_rows.get('passed')} passed, {smoke_rows.get('failed')} failed | "
          f"{report['seconds']} s | {out / 'gpu_check.json'}")
    return 0 if smoke.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())

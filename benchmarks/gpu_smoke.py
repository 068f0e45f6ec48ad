"""Every user-facing path through the real entry points, on whatever accelerator this machine has:

- every method (finetune, prompt, ptuning, prefix) on tiny random BERT, DeBERTa-v2, MPNet and GLM
  backbones through ``launcher/train.py``: 20 steps with evaluation and checkpoints (WNUT-16 fixtures);
- a resume (the finished BERT prefix run, re-run: loads its checkpoint, same scores);
- SIGTERM in the middle of a run -> exit 75 and PREEMPTED, then the same command finishes it;
- ``launcher/evaluate.py`` and ``launcher/predict.py`` on a trained artifact.

    python benchmarks/gpu_smoke.py --out OUT_DIR [--jobs 4] [--families bert,glm] [--methods prefix]

One rank per run (plain ``python``: world size 1 over NCCL on a GPU, gloo on a CPU), several runs at
once. Writes OUT_DIR/gpu_smoke.json (one row per check) and prints a table; exits 1 if any check failed.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FAMILIES = ("bert", "deberta-v2", "mpnet", "glm")
METHODS = ("finetune", "prompt", "ptuning", "prefix")
STEPS = 20


def make_models(root: Path, families) -> dict[str, Path]:
    from tests.models.glm.tiny_glm import save_tiny_glm
    from tests.tiny import save_tiny

    out = {}
    for family in families:
        if family == "glm":
            out[family] = save_tiny_glm(root / "glm", initializer_range=0.2, hidden_dropout=0.1,
                                        attention_dropout=0.1)[0]
        else:
            out[family] = save_tiny(family, root / family)
    return out


def train_args(model: Path, out: Path, method: str, steps: int = STEPS, **extra) -> list[str]:
    lr = "1e-3" if method == "finetune" else "3e-2"
    args = {"model.path": model, "task.data_dir": REPO / "tests/fixtures/wnut16", "prompt.method": method,
            "prompt.length": 4, "task.max_seq_length": 32, "train.max_steps": steps, "train.batch_size": 8,
            "train.micro_batch_size": 4, "train.eval_every": 10, "train.save_every": 10, "train.eval_batch_size": 8,
            "train.lr": lr, "output_dir": out, **extra}
    return [f"{k}={v}" for k, v in args.items()]


class Smoke:
    def __init__(self, out: Path, device: str):
        self.out, self.device, self.rows = out, device, []
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "TOKENIZERS_PARALLELISM": "false"}
        for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT"):
            self.env.pop(k, None)

    def _run(self, name: str, cmd: list, timeout: float = 600, check=None, **popen) -> dict:
        started = time.time()
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.Popen([sys.executable, *map(str, cmd)], cwd=REPO, env=self.env, stdout=fh,
                                    stderr=subprocess.STDOUT, **popen)
            try:
                rc = proc.wait(timeout=timeout) if check is None else check(proc)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "timeout"
        row = {"check": name, "rc": rc, "seconds": round(time.time() - started, 1)}
        return row

    def record(self, row: dict, ok: bool, **detail) -> dict:
        row = {**row, "ok": bool(ok), **detail}
        if not ok:
            row["log_tail"] = (self.out / "logs" / f"{row['check']}.log").read_text()[-2000:]
        self.rows.append(row)
        mark = "ok " if ok else "FAIL"
        print(f"{mark} {row['check']:<28} rc {row['rc']:<4} {row['seconds']:>6.1f} s  "
              + " ".join(f"{k}={v}" for k, v in detail.items()), flush=True)
        return row

    # ---- the checks
    def train(self, family: str, method: str, model: Path) -> None:
        name, out = f"train-{family}-{method}", self.out / "runs" / f"{family}-{method}"
        row = self._run(name, ["launcher/train.py", "--ds_config", "ds_configs/zero3.json",
                               *train_args(model, out, method)])
        r = _results(out)
        ok = row["rc"] == 0 and r is not None and r["steps"] == STEPS and r["frozen_backbone"] is not None \
            and (method == "finetune" or r["frozen_backbone"]["unchanged"] is True)
        detail = {}
        if r:
            tp = r.get("throughput") or {}
            detail = {"loss": f"{r['train_loss']['first']:.3f}->{r['train_loss']['last']:.3f}",
                      "tokens_per_s": round(tp.get("tokens_per_s") or 0), "accelerator": r["device"]["accelerator"],
                      "backend": r["device"]["backend"], "peak_mem_mb": (r.get("peak_accelerator_memory_mb_per_rank")
                                                                         or [None])[0]}
            ok = ok and r["device"]["accelerator"] == self.device
        self.record(row, ok, **detail)

    def resume(self, model: Path) -> None:
        """The same command again: it loads the last checkpoint (every tensor through the
        collectives) and reports the same LAST scores without training."""
        out = self.out / "runs" / "bert-prefix"
        before = _results(out)
        row = self._run("resume-bert-prefix", ["launcher/train.py", "--ds_config", "ds_configs/zero3.json",
                                               *train_args(model, out, "prefix")])
        r = _results(out)
        same = r is not None and before is not None and r["tasks"]["wnut16"]["last"] == before["tasks"]["wnut16"]["last"]
        self.record(row, row["rc"] == 0 and same and r["resumed_from"] == STEPS, resumed_from=r and r["resumed_from"],
                    same_scores=same)

    def sigterm(self, model: Path) -> None:
        out = self.out / "runs" / "sigterm-glm-prefix"
        cmd = ["launcher/train.py", "--ds_config", "ds_configs/zero3.json",
               *train_args(model, out, "prefix", steps=150, **{"train.save_every": 0, "train.eval_every": 0})]

        def kill_after_steps(proc):
            log = out / "train_log.jsonl"
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:
                if log.is_file() and len(log.read_text().splitlines()) >= 5:
                    proc.send_signal(signal.SIGTERM)
                    break
                time.sleep(0.2)
            return proc.wait(timeout=300)
        row = self._run("sigterm-glm-prefix", cmd, check=kill_after_steps)
        stopped_at = (out / "PREEMPTED").read_text().strip() if (out / "PREEMPTED").is_file() else None
        self.record(row, row["rc"] == 75 and stopped_at is not None, preempted_at=stopped_at)
        row = self._run("sigterm-resume-glm-prefix", cmd)
        r = _results(out)
        self.record(row, row["rc"] == 0 and r is not None and r["resumed_from"] == int(stopped_at or -1)
                    and not (out / "PREEMPTED").exists(), resumed_from=r and r["resumed_from"])

    def evaluate(self) -> None:
        artifact = self.out / "runs" / "bert-prefix" / "artifact"
        row = self._run("evaluate-bert-prefix", ["launcher/evaluate.py", "--artifact", artifact, "--ds_config",
                                                 "ds_configs/zero3.json", f"output_dir={self.out / 'eval'}"])
        path = self.out / "eval" / "eval_results.json"
        metrics = json.loads(path.read_text())["metrics"] if path.is_file() else None
        self.record(row, row["rc"] == 0 and metrics is not None and "dev" in metrics,
                    dev_f1=metrics and round(metrics["dev"]["f1"], 2))

    def predict(self) -> None:
        artifact = self.out / "runs" / "bert-prefix" / "artifact"
        src, dst = self.out / "predict_in.jsonl", self.out / "predict_out.jsonl"
        src.write_text("".join(json.dumps({"task": "wnut16", "text": t}) + "\n" for t in
                               ("new york is big", "i met john in paris today")))
        gpu = self.device != "cpu"
        row = self._run("predict-bert-prefix", ["launcher/predict.py", "--artifact", artifact, "--input", src,
                                                "--output", dst, "--device", "cuda" if gpu else "cpu",
                                                "--dtype", "bfloat16" if gpu else "float32"])
        lines = [json.loads(line) for line in dst.read_text().splitlines()] if dst.is_file() else []
        self.record(row, row["rc"] == 0 and len(lines) == 2 and all(len(x["tags"]) == len(x["words"]) for x in lines),
                    predictions=len(lines))


def _results(out: Path) -> dict | None:
    path = out / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="output directory (default: a temporary one)")
    ap.add_argument("--jobs", type=int, default=4, help="runs at once")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_smoke-"))
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("DEEPPROMPT_CACHE", str(out / "cache"))
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    families, methods = args.families.split(","), args.methods.split(",")
    started = time.time()
    models = make_models(out / "models", sorted(set(families) | {"bert", "glm"}))
    smoke = Smoke(out, device)
    with ThreadPoolExecutor(args.jobs) as pool:  # phase 1: every training run, and a run to interrupt
        jobs = [pool.submit(smoke.train, f, m, models[f]) for f in families for m in methods]
        if ("bert", "prefix") not in [(f, m) for f in families for m in methods]:
            jobs.append(pool.submit(smoke.train, "bert", "prefix", models["bert"]))
        jobs.append(pool.submit(smoke.sigterm, models["glm"]))
        for j in jobs:
            j.result()
    with ThreadPoolExecutor(args.jobs) as pool:  # phase 2: what needs a finished run
        for j in [pool.submit(smoke.resume, models["bert"]), pool.submit(smoke.evaluate), pool.submit(smoke.predict)]:
            j.result()
    summary = {"device": device, "torch": torch.__version__, "seconds": round(time.time() - started, 1),
               "passed": sum(r["ok"] for r in smoke.rows), "failed": sum(not r["ok"] for r in smoke.rows),
               "checks": smoke.rows}
    (out / "gpu_smoke.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{summary['passed']} passed, {summary['failed']} failed in {summary['seconds']} s | {out / 'gpu_smoke.json'}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Bytes each rank's collectives move per training step, MEASURED, against the volumes the
step-time model uses (``deepprompt.memory`` ``Layout.transfers``; docs/scaling.md).

Every ``torch.distributed`` collective of every rank is counted by benchmarks/_comm_count.py (a
wrapper installed before DeepSpeed binds them): calls and payload bytes per operation and per
group scope (all ranks / one node). Each run is launched twice, for 3 and for 6 optimizer steps;
the difference over 3 steps is one steady-state step (start-up, the first step's gathers, the final
evaluation and save cancel). Runs: P-Tuning v2 (prefix 16) on all-MiniLM-L6-v2 / WNUT-16 (real
assets: ``make assets``), fp32, global batch 32, max_seq_length 128, no evaluation until the end:

- 1 node x 2 ranks: flat ZeRO-3 (ds_configs/zero3.json, stage3_max_reuse_distance 1e9), the same with
  stage3_max_reuse_distance 0 (every layer re-gathered for the backward), replicated
  (ds_configs/zero_replicated.json);
- 2 simulated nodes x 2 ranks on loopback (one ``deepspeed --no_ssh --node_rank N`` per node): flat
  ZeRO-3 and node-local ZeRO-3 (ds_configs/zero3_node_local.json, as shipped with persistence
  threshold 0, and with "auto").

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/comm_volume.py [--runs runs/comm_volume]

Prints one table per run (measured vs model, per operation and scope) and writes
docs/benchmarks/comm_volume.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from _bench import REPO, free_port, print_table, write_json

sys.path.insert(0, str(REPO))
STEPS = (3, 6)
# the list form of all_gather carries only pickled objects here (all_gather_object): not the model's
OPS = {"all_gather_into_tensor": "all_gather", "all_gather": "all_gather_object", "reduce_scatter_tensor": "reduce_scatter",
       "all_reduce": "all_reduce", "broadcast": "broadcast"}
RUNS = {  # name: (ds config, ds overrides, nodes, ranks per node)
    "flat_1x2": ("ds_configs/zero3.json", {}, 1, 2),
    "flat_1x2_reuse0": ("ds_configs/zero3.json", {"stage3_max_reuse_distance": 0}, 1, 2),
    "replicated_1x2": ("ds_configs/zero_replicated.json", {}, 1, 2),
    "flat_2x2": ("ds_configs/zero3.json", {}, 2, 2),
    "node_local_2x2": ("ds_configs/zero3_node_local.json", {}, 2, 2),
    "node_local_2x2_auto": ("ds_configs/zero3_node_local.json", {"stage3_param_persistence_threshold": "auto"}, 2, 2),
}


def env(count_dir: Path) -> dict:
    keep = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    return {**keep, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO),
            "COMM_COUNT_DIR": str(count_dir)}


def launch(out: Path, ds_config: Path, nodes: int, per_node: int, steps: int) -> None:
    """One run under the counting wrapper; skipped when its counts exist."""
    counts = out / "comm"
    if (counts / "rank0.json").is_file():
        return
    deepspeed = str(REPO / ".venv/bin/deepspeed")
    world = nodes * per_node
    train = ["benchmarks/_comm_count.py", "launcher/train.py", "--ds_config", str(ds_config),
             "prompt.method=prefix", "prompt.length=16", "task.max_seq_length=128", f"train.max_steps={steps}",
             "train.batch_size=32", f"train.micro_batch_size={32 // world}", "train.eval_every=0",
             "train.save_every=0", "train.resume=never", f"output_dir={out}"]
    port = str(free_port())
    if nodes == 1:
        cmds = [[deepspeed, "--num_gpus", str(per_node), "--master_addr", "127.0.0.1", "--master_port", port, *train]]
    else:
        hostfile = out.parent / f"hostfile_{nodes}x{per_node}"
        hostfile.parent.mkdir(parents=True, exist_ok=True)
        hostfile.write_text("".join(f"node-{chr(97 + n)} slots={per_node}\n" for n in range(nodes)))
        cmds = [[deepspeed, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(n), "--master_addr",
                 "127.0.0.1", "--master_port", port, *train] for n in range(nodes)]
    procs = [subprocess.Popen(c, cwd=REPO, env=env(counts)) for c in cmds]
    if any(p.wait() for p in procs):
        raise SystemExit(f"run failed: {out}")


def measured(run_dir: Path, world: int) -> tuple[dict, list[dict]]:
    """Per (op, scope): calls and bytes of ONE steady-state step (rank 0), and every rank's rows."""
    def load(steps: int, rank: int) -> dict:
        rows = json.loads((run_dir / f"steps{steps}" / "comm" / f"rank{rank}.json").read_text())
        out: dict = defaultdict(lambda: [0, 0])
        for r in rows:
            key = (OPS.get(r["op"], r["op"]), r["scope"])
            out[key][0] += r["calls"]
            out[key][1] += r["bytes"]
        return out
    per_rank = []
    for rank in range(world):
        a, b = load(STEPS[0], rank), load(STEPS[1], rank)
        per_rank.append({f"{op}/{scope}": {"calls": (b[k][0] - a[k][0]) / (STEPS[1] - STEPS[0]),
                                           "bytes": (b[k][1] - a[k][1]) / (STEPS[1] - STEPS[0])}
                         for k in set(a) | set(b) for op, scope in [k]})
    return per_rank[0], per_rank


def model_volumes(name: str, ds: dict, nodes: int, per_node: int, trainable: int) -> tuple[dict, list]:
    """The model's per-step payload bytes and calls per (op, scope), and its transfers."""
    import torch
    from transformers import AutoModel

    from deepprompt import memory
    from deepprompt.engine.ds_setup import resolve_ds_config
    from deepprompt.engine.layout import layout_name
    from deepprompt.config import load_config
    from deepprompt.models.loading import resolve_model_path

    path = resolve_model_path("all-minilm-l6-v2")
    model = AutoModel.from_pretrained(path, dtype=torch.float32)
    c = model.config
    bb = memory.module_backbone(model, c.hidden_size, c.num_hidden_layers, c.num_attention_heads, "all-minilm-l6-v2")
    world = nodes * per_node
    run = load_config(None, ["train.batch_size=32", f"train.micro_batch_size={32 // world}"])
    resolved = resolve_ds_config(ds, run, world, c.hidden_size, ranks_per_node=per_node)
    zero = resolved["zero_optimization"]
    w = memory.Workload(world=world, micro_batch=32 // world, seq=128, prompt_length=16, weight_bytes=4,
                        layout=layout_name(resolved), ranks_per_node=per_node,
                        persistence_threshold=zero.get("stage3_param_persistence_threshold"),
                        trainable=trainable, reuse_distance=zero.get("stage3_max_reuse_distance", 1e9),
                        max_live=zero.get("stage3_max_live_parameters", 1e9))
    transfers = memory.layout_of(w).transfers(bb, w)
    out: dict = defaultdict(lambda: {"calls": 0, "bytes": 0.0})
    for t in transfers:
        scope = "world" if t.group == "world" or world <= per_node else "node"
        out[f"{t.op}/{scope}"]["calls"] += t.calls * t.per_step
        out[f"{t.op}/{scope}"]["bytes"] += t.bytes_per_step
    return dict(out), [vars(t) | {"bytes_per_step": t.bytes_per_step} for t in transfers]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="runs/comm_volume")
    ap.add_argument("--only", nargs="*", default=list(RUNS))
    args = ap.parse_args()
    results = {}
    for name in args.only:
        config, overrides, nodes, per_node = RUNS[name]
        run_dir = REPO / args.runs / name
        ds = json.loads((REPO / config).read_text())
        ds["zero_optimization"].update(overrides)
        run_dir.mkdir(parents=True, exist_ok=True)
        ds_path = run_dir / "ds_config.json"
        ds_path.write_text(json.dumps(ds, indent=1))
        for steps in STEPS:
            launch(run_dir / f"steps{steps}", ds_path, nodes, per_node, steps)
        r = json.loads((run_dir / f"steps{STEPS[1]}" / "results.json").read_text())
        mine, every_rank = measured(run_dir, nodes * per_node)
        model, transfers = model_volumes(name, ds, nodes, per_node, r["params"]["trainable"])
        rows = []
        for key in sorted(set(mine) | set(model)):
            m, f = mine.get(key, {"calls": 0, "bytes": 0}), model.get(key, {"calls": 0, "bytes": 0})
            ratio = f"{m['bytes'] / f['bytes']:.4f}" if f["bytes"] else "-"
            rows.append((key, f"{m['calls']:.0f}", f"{f['calls']:.0f}", f"{m['bytes']:,.0f}", f"{f['bytes']:,.0f}", ratio))
        print(f"\n### {name}: {nodes} node(s) x {per_node} rank(s), {config} {overrides or ''}\n")
        print_table(("op/scope", "calls measured", "calls model (at most)", "bytes measured", "bytes model",
                     "measured / model"), rows)
        results[name] = {"ds_config": config, "ds_overrides": overrides, "nodes": nodes, "ranks_per_node": per_node,
                         "trainable": r["params"]["trainable"], "measured_rank0": mine,
                         "measured_every_rank": every_rank, "model": model, "model_transfers": transfers,
                         "frozen_numel_per_rank": r["params"]["frozen_numel_per_rank"]}
    earlier = REPO / "docs" / "benchmarks" / "comm_volume.json"
    if earlier.is_file():
        results = {**json.loads(earlier.read_text())["runs"], **results}
    out = write_json("comm_volume.json", {
        "backbone": "all-minilm-l6-v2", "task": "wnut16", "method": "prefix", "prompt_length": 16,
        "precision": "fp32", "global_batch": 32, "max_seq_length": 128, "steps": list(STEPS),
        "per_step": f"(counts after {STEPS[1]} steps - counts after {STEPS[0]}) / {STEPS[1] - STEPS[0]}",
        "payload": "bytes of the whole tensor a collective produces (all_gather) or reduces (reduce_scatter, "
                   "all_reduce), as handed to torch.distributed",
        "runs": results})
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()

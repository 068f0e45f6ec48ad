"""Peak host memory per rank while loading a GLM under ZeRO-3, 1 vs 2 ranks, and the memory
calculator's terms checked against what this code really stores.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/glm_load_memory.py [--preset glm-large] [--dir /tmp/glm_mem]

1. writes a random GLM of the preset's shape in the ORIGINAL layout (mp_rank_00_model_states.pt, fp32);
2. loads it (a) plainly in one process (no ZeRO: the whole model in memory), (b) under ZeRO-3 with 1
   rank and (c) with 2 ranks, through GLMAdapter.load_model (the trainer's path). Each rank resets its
   peak-RSS counter (/proc/self/clear_refs) right before loading and reads VmHWM after, so the peak is
   the loading's own (imports and the process group excluded; their RSS is reported as the baseline);
3. counts the bytes autograd saves for backward in a prefix-tuned GLM forward and compares them with
   ``deepprompt.memory.activation_bytes_per_layer``.
Prints a table; writes docs/benchmarks/glm_load_memory.json.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
MIB = 1024 ** 2


def proc_status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


def worker(model_dir: str, out_dir: str, zero3: bool) -> None:
    """One rank: load the model, report its memory."""
    torch.set_num_threads(1)
    from deepprompt.engine import comm, ds_setup
    from deepprompt.models.backbones.glm import GLMAdapter

    ds = None
    if zero3:
        comm.init_distributed()
        ds = {"train_batch_size": torch.distributed.get_world_size(), "train_micro_batch_size_per_gpu": 1,
              "zero_optimization": {"stage": 3}}
    rank = torch.distributed.get_rank() if zero3 else 0
    before = proc_status()
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: the peak from here on is the loading's
    t0 = time.time()
    model = GLMAdapter.load_model(model_dir, torch.float32, ds)
    seconds = time.time() - t0
    after = proc_status()
    local = sum(getattr(p, "ds_tensor", p).numel() * 4 for p in model.parameters())
    row = {"rank": rank, "world": torch.distributed.get_world_size() if zero3 else 1, "zero3": zero3,
           "baseline_rss": before["VmRSS"], "peak_rss_during_load": after["VmHWM"], "rss_after": after["VmRSS"],
           "rss_anon_after": after["RssAnon"], "rss_file_after": after["RssFile"], "local_weight_bytes": local,
           "load_seconds": round(seconds, 1)}
    Path(out_dir, f"{'zero3' if zero3 else 'plain'}_w{row['world']}_rank{rank}.json").write_text(json.dumps(row))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def write_model(preset: str, directory: Path) -> dict:
    from deepprompt.models.glm.checkpoint import save_original
    from deepprompt.models.glm.config import PRESETS
    from deepprompt.models.glm.model import GLMModel, init_weights

    cfg = PRESETS[preset]
    if not (directory / "mp_rank_00_model_states.pt").is_file():
        torch.manual_seed(0)
        model = GLMModel(cfg)
        init_weights(model)
        save_original(model, directory)
        del model
    size = (directory / "mp_rank_00_model_states.pt").stat().st_size
    return {"preset": preset, "params": cfg.num_params(), "fp32_bytes": cfg.num_params() * 4, "file_bytes": size}


def activation_check() -> list[dict]:
    """Bytes autograd saves in one prefix-tuned forward vs the calculator's formula."""
    from deepprompt.config import load_config
    from deepprompt.memory import Workload, activation_bytes_per_layer
    from deepprompt.models.backbones.glm import GLMAdapter
    from deepprompt.models.glm.config import GLMConfig
    from deepprompt.models.glm.model import GLMModel
    import deepprompt.prompts  # noqa: F401  (registers the methods)
    from deepprompt.registry import PROMPTS

    from deepspeed.runtime.zero.linear import zero3_linear_wrap

    rows = []
    torch_linear = torch._C._nn.linear
    for dtype, wb, zero3_linear in ((torch.float32, 4, True), (torch.bfloat16, 2, True), (torch.float32, 4, False)):
        # ZeRO-3's zero.Init replaces F.linear with DeepSpeed's (it keeps linear inputs); measure both
        torch.nn.functional.linear = zero3_linear_wrap if zero3_linear else torch_linear
        # attention dropout 0: on CPU it would send attention to torch's unfused math kernel, unlike a GPU
        cfg = GLMConfig(vocab_size=1000, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                        max_position_embeddings=256, attention_dropout=0.0)
        model = GLMModel(cfg).to(dtype).train().requires_grad_(False)
        adapter = GLMAdapter(model)
        prompt = PROMPTS.get("prefix")(load_config(None, ["prompt.length=8", "prompt.dropout=0"]).prompt,
                                       adapter.spec()).to(dtype)
        b, s = 4, 64
        saved: dict[int, int] = {}
        weights = {p.untyped_storage().data_ptr() for p in model.parameters()}

        def pack(t):  # activations only: a saved reference to a (frozen) weight costs no memory
            if t.untyped_storage().data_ptr() not in weights:
                saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t
        adapter.set_prefix(prompt(b).layer_kv)  # the prompt's own saved index is not the backbone's
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = model(torch.randint(0, 1000, (b, s))).last_hidden_state
        out.float().sum().backward()
        w = Workload(world=1, micro_batch=b, seq=s, prompt_length=8, weight_bytes=wb, dropout=True,
                     mask_bytes=wb, zero3_linear=zero3_linear)  # CPU dropout keeps its mask in the tensor's dtype
        predicted = cfg.num_hidden_layers * activation_bytes_per_layer(cfg, w)
        measured = sum(saved.values())
        rows.append({"dtype": str(dtype).replace("torch.", ""), "zero3_linear": zero3_linear, "batch": b, "seq": s, "prefix": 8,
                     "hidden": 256, "heads": 8, "layers": 4, "measured_bytes": measured,
                     "predicted_bytes": int(predicted), "ratio": round(measured / predicted, 3)})
    torch.nn.functional.linear = torch_linear
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="glm-large")
    ap.add_argument("--dir", default="/tmp/glm_mem_bench")
    ap.add_argument("--worker", nargs=3, metavar=("MODEL_DIR", "OUT_DIR", "ZERO3"))
    ap.add_argument("--local_rank", type=int, default=0)
    ap.add_argument("--activations-only", action="store_true", help="redo only the activation check in the JSON")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.worker[2] == "1")
    if args.activations_only:
        out = REPO / "docs" / "benchmarks" / "glm_load_memory.json"
        result = json.loads(out.read_text())
        result["activations"] = activation_check()
        out.write_text(json.dumps(result, indent=2) + "\n")
        return print(json.dumps(result["activations"], indent=1))
    from deepprompt.memory import Workload, estimate
    from deepprompt.models.glm.config import PRESETS

    model_dir = Path(args.dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    info = write_model(args.preset, model_dir)
    out_dir = model_dir / "reports"
    out_dir.mkdir(exist_ok=True)
    for f in out_dir.glob("*.json"):
        f.unlink()
    me = [sys.executable, str(Path(__file__).resolve())]
    subprocess.run([*me, "--worker", str(model_dir), str(out_dir), "0"], check=True, env=_env(), cwd=REPO)
    ds_bin = str(Path(sys.executable).parent / "deepspeed")
    for world in (1, 2):
        subprocess.run([ds_bin, "--num_gpus", str(world), "--no_ssh_check", "--master_addr", "127.0.0.1",
                        "--master_port", str(_free_port()), *me[1:], "--worker", str(model_dir), str(out_dir), "1"],
                       check=True, env=_env(), cwd=REPO, stdout=subprocess.DEVNULL)
    rows = [json.loads(f.read_text()) for f in sorted(out_dir.glob("*.json"))]
    cfg = PRESETS[args.preset]
    for r in rows:
        w = r["world"] if r["zero3"] else 1
        r["calculator_frozen_weight_bytes"] = int(estimate(cfg, Workload(world=w, weight_bytes=4))["frozen_weights"])
    acts = activation_check()
    result = {"model": info, "machine": f"{os.cpu_count()} CPU cores, shared; fp32 on CPU", "load": rows,
              "activations": acts,
              "command": "PYTHONPATH=$PWD .venv/bin/python benchmarks/glm_load_memory.py --preset " + args.preset}
    print(f"{args.preset}: {info['params'] / 1e6:.0f}M params, fp32 {info['fp32_bytes'] / MIB:.0f} MiB, "
          f"file {info['file_bytes'] / MIB:.0f} MiB")
    print(f"{'load':<14}{'rank':>5}{'baseline':>10}{'peak':>10}{'peak-base':>11}{'after':>10}{'anon':>10}"
          f"{'file':>10}{'shard':>10}{'calc':>10}{'s':>7}   (MiB)")
    for r in rows:
        name = f"zero3 x{r['world']}" if r["zero3"] else "plain"
        print(f"{name:<14}{r['rank']:>5}" + "".join(f"{r[k] / MIB:>10.0f}" for k in (
            "baseline_rss", "peak_rss_during_load")) + f"{(r['peak_rss_during_load'] - r['baseline_rss']) / MIB:>11.0f}" +
            "".join(f"{r[k] / MIB:>10.0f}" for k in ("rss_after", "rss_anon_after", "rss_file_after",
                                                      "local_weight_bytes", "calculator_frozen_weight_bytes"))
            + f"{r['load_seconds']:>7}")
    for a in acts:
        print(f"activations {a['dtype']} zero3_linear={a['zero3_linear']}: measured {a['measured_bytes'] / MIB:.2f} MiB, calculator "
              f"{a['predicted_bytes'] / MIB:.2f} MiB (ratio {a['ratio']})")
    out = REPO / "docs" / "benchmarks" / "glm_load_memory.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()

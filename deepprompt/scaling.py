"""Step time, tokens/s and weak-scaling efficiency of deep prompt tuning on N GPUs, per layout: a
model (docs/scaling.md; ``python -m deepprompt scaling``).

- compute: FLOPs per token (``engine/throughput.py``: 4N for a frozen backbone, + attention) over a
  given per-GPU throughput (achieved TFLOP/s, or tokens/s measured on one GPU);
- communication: the layout's collectives of one steady-state step (``deepprompt.memory``
  ``Layout.transfers``; their bytes are checked against bytes measured on CPU runs by
  benchmarks/comm_volume.py), each a ring over its group: an all-gather or reduce-scatter of S bytes
  over n ranks takes ``(n-1)·α + (n-1)/n · S / B``, an all-reduce twice that. A group inside one node
  runs at NVLink's ``B``/``α``; a group spanning nodes at the network's, per GPU (every step of the
  ring waits for its slowest hop);
- overlap: ZeRO-3 prefetches the forward/backward gathers and reduces gradients during the backward,
  so those hide behind compute; the re-gathers after the optimizer step do not. Step time =
  ``max(compute, overlapped) + exposed``; ``serial`` adds everything (no overlap at all).

Weak scaling: the per-GPU batch is fixed, so the ideal step is the compute alone and the efficiency
is ``compute / step``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, replace

from deepprompt import memory
from deepprompt.engine.throughput import FlopsModel

OVERLAPPED = ("forward", "backward", "gradients")  # Transfer kinds ZeRO-3 runs behind compute
SHIPPED = {"flat": ("ds_configs/zero3.json", None), "node_local": ("ds_configs/zero3_node_local.json", 0),
           "replicated": ("ds_configs/zero_replicated.json", None)}
"""Each layout's shipped DeepSpeed JSON and its ``stage3_param_persistence_threshold`` (None: "auto"
= 10·h); the model uses these unless ``--threshold`` says otherwise (a test holds them to the files)."""


@dataclass(frozen=True)
class Links:
    intra_gbs: float = 300.0
    """GB/s per GPU inside a node: NVLink all-gather bus bandwidth (H100 NVLink 4 offers 450 GB/s
    per direction; NCCL reaches roughly 2/3 of it)."""
    inter_gbs: float = 40.0
    """GB/s per GPU between nodes: one 400 Gb/s InfiniBand NDR NIC per GPU at ~80 %."""
    intra_latency_us: float = 1.0
    """Per ring step inside a node."""
    inter_latency_us: float = 5.0
    """Per ring step across nodes."""


def collective_seconds(t: memory.Transfer, w: memory.Workload, links: Links) -> float:
    """One step's worth of ``t`` (all its occurrences)."""
    n = w.world if t.group == "world" else min(w.ranks_per_node, w.world)
    if n <= 1:
        return 0.0
    crosses = t.group == "world" and w.world > w.ranks_per_node
    bandwidth = 1e9 * (links.inter_gbs if crosses else links.intra_gbs)
    latency = 1e-6 * (links.inter_latency_us if crosses else links.intra_latency_us)
    ring = (n - 1) * (2 if t.op == "all_reduce" else 1)
    return t.per_step * (t.calls * ring * latency + ring / n * t.payload / bandwidth)


def flops_per_token(bb: memory.Backbone, w: memory.Workload) -> float:
    return FlopsModel(n_matmul=bb.numel - bb.embedding_numel, num_layers=bb.layers, hidden=bb.hidden,
                      prefix_length=w.prompt_length, finetune=False, checkpointing=w.checkpointing,
                      backward_layers=bb.layers).per_token(w.seq)


def step(bb: memory.Backbone, w: memory.Workload, links: Links, tflops: float) -> dict:
    """Seconds of one optimizer step and what they are made of, tokens/s of the job, efficiency."""
    tokens = w.micro_batch * w.seq * w.grad_accum  # per GPU per step
    compute = tokens * flops_per_token(bb, w) / (tflops * 1e12)
    transfers = memory.layout_of(w).transfers(bb, w)
    seconds = {t.what.split(":")[0]: collective_seconds(t, w, links) for t in transfers}
    overlapped = sum(s for kind, s in seconds.items() if kind in OVERLAPPED)
    exposed = sum(s for kind, s in seconds.items() if kind not in OVERLAPPED)
    step_s = max(compute, overlapped) + exposed
    serial = compute + overlapped + exposed
    crossing = sum(t.bytes_per_step for t in transfers if t.group == "world" and w.world > w.ranks_per_node)
    return {"gpus": w.world, "layout": w.layout, "compute_s": compute, "comm_s": seconds,
            "overlapped_s": overlapped, "exposed_s": exposed, "step_s": step_s, "serial_step_s": serial,
            "tokens_per_s": w.world * tokens / step_s, "efficiency": compute / step_s,
            "efficiency_serial": compute / serial, "inter_node_payload_bytes_per_gpu": crossing,
            "memory_bytes_per_gpu": memory.estimate(bb, w)["total"]}


def table(bb: memory.Backbone, base: memory.Workload, gpus: list[int], layouts: list[str], links: Links,
          tflops: float, gpu_memory_gib: float, threshold_given: bool = False) -> tuple[str, list[dict]]:
    def workload(layout: str, n: int) -> memory.Workload:
        threshold = base.persistence_threshold if threshold_given else SHIPPED[layout][1]
        return replace(base, world=n, layout=layout, persistence_threshold=threshold)
    rows = [step(bb, workload(layout, n), links, tflops) for layout in layouts for n in gpus]
    head = ("layout", "GPUs", "step ms", "compute ms", "comm ms (hidden / exposed)", "tokens/s", "efficiency",
            "no-overlap eff.", "inter-node GB/GPU/step", "GiB/GPU")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        gib = r["memory_bytes_per_gpu"] / memory.GIB
        lines.append("| " + " | ".join([
            r["layout"], str(r["gpus"]), f"{1e3 * r['step_s']:.0f}", f"{1e3 * r['compute_s']:.0f}",
            f"{1e3 * r['overlapped_s']:.0f} / {1e3 * r['exposed_s']:.0f}", f"{r['tokens_per_s']:,.0f}",
            f"{100 * r['efficiency']:.0f} %", f"{100 * r['efficiency_serial']:.0f} %",
            f"{r['inter_node_payload_bytes_per_gpu'] / 1e9:.2f}",
            f"{gib:.1f}" + ("" if gib <= gpu_memory_gib else " (does not fit)")]) + " |")
    return "\n".join(lines), rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="deepprompt scaling", description=__doc__.split("\n\n")[0])
    memory.add_workload_args(ap)
    ap.add_argument("--gpus", type=int, nargs="+", default=[8, 64, 512])
    ap.add_argument("--layouts", nargs="+", choices=memory.LAYOUTS.names(), default=["flat", "node_local", "replicated"])
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--tflops", type=float, default=400.0,
                    help="achieved TFLOP/s per GPU in the compute (default 400: 40 %% of an H100's 989 bf16 peak)")
    ap.add_argument("--tokens-per-gpu", type=float, default=None,
                    help="measured training tokens/s of ONE GPU (compute only); overrides --tflops")
    ap.add_argument("--intra-gbs", type=float, default=Links.intra_gbs)
    ap.add_argument("--inter-gbs", type=float, default=Links.inter_gbs)
    ap.add_argument("--intra-latency-us", type=float, default=Links.intra_latency_us)
    ap.add_argument("--inter-latency-us", type=float, default=Links.inter_latency_us)
    ap.add_argument("--gpu-memory-gib", type=float, default=80.0)
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)
    bb = memory.load_backbone(args.model)
    # gradients are reduced in fp32 (ds_setup fills communication_data_type), whatever the weights
    base = memory.Workload(world=1, grad_accum=args.grad_accum, grad_bytes=4, **memory.workload_kwargs(args))
    tflops = args.tflops if args.tokens_per_gpu is None else args.tokens_per_gpu * flops_per_token(bb, base) / 1e12
    links = Links(args.intra_gbs, args.inter_gbs, args.intra_latency_us, args.inter_latency_us)
    text, rows = table(bb, base, args.gpus, args.layouts, links, tflops, args.gpu_memory_gib, args.threshold is not None)
    print(f"{args.model}: {bb.numel / 1e9:.2f}B params | micro batch {base.micro_batch} x seq {base.seq} per GPU, "
          f"P={base.prompt_length}, {args.dtype} | {tflops:.0f} TFLOP/s per GPU | {base.ranks_per_node} GPUs per node, "
          f"NVLink {links.intra_gbs:g} GB/s + {links.intra_latency_us:g} us, network {links.inter_gbs:g} GB/s + "
          f"{links.inter_latency_us:g} us per GPU")
    print(text)
    if args.json:
        import json
        from pathlib import Path
        Path(args.json).write_text(json.dumps({"args": vars(args), "tflops": tflops, "rows": rows}, indent=2))

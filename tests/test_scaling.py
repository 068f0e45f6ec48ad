"""The step-time model (deepprompt/scaling.py): its ring formulas by hand, what each layout sends
across nodes, and the shipped configs it assumes."""
import json

import pytest

from deepprompt import memory, scaling
from tests.tiny import REPO

LINKS = scaling.Links(intra_gbs=300, inter_gbs=40, intra_latency_us=1, inter_latency_us=5)


def test_ring_all_gather_and_all_reduce_by_hand():
    t = memory.Transfer("forward: x", "all_gather", "world", payload=1e9, per_step=2, calls=3)
    inside = memory.Workload(world=8, ranks_per_node=8)
    assert scaling.collective_seconds(t, inside, LINKS) == pytest.approx(2 * (3 * 7 * 1e-6 + 7 / 8 * 1e9 / 300e9))
    across = memory.Workload(world=64, ranks_per_node=8)  # every ring step waits for the network
    assert scaling.collective_seconds(t, across, LINKS) == pytest.approx(2 * (3 * 63 * 5e-6 + 63 / 64 * 1e9 / 40e9))
    node = memory.Transfer("forward: x", "all_gather", "node", payload=1e9, per_step=1)
    assert scaling.collective_seconds(node, across, LINKS) == pytest.approx(7e-6 + 7 / 8 * 1e9 / 300e9)
    reduce = memory.Transfer("gradients: x", "all_reduce", "world", payload=1e9, per_step=1)
    assert scaling.collective_seconds(reduce, across, LINKS) == pytest.approx(2 * 63 * 5e-6 + 2 * 63 / 64 * 1e9 / 40e9)
    assert scaling.collective_seconds(t, memory.Workload(world=1), LINKS) == 0


def test_what_each_layout_sends_across_nodes_for_glm_10b():
    bb = memory.load_backbone("glm-xxlarge")
    rows = {(r["layout"], r["gpus"]): r for r in scaling.table(
        bb, memory.Workload(world=1, grad_bytes=4), [8, 64], ["flat", "node_local", "replicated"], LINKS, 400.0, 80.0)[1]}
    t = 16 * 48 * 2 * 4096 + 2 * 4097
    # one node: nothing crosses; 8 nodes, flat: the forward gathers (and the backward re-gathers) of
    # every sharded frozen tensor, each more than the whole bf16 backbone's half
    assert rows[("flat", 8)]["inter_node_payload_bytes_per_gpu"] == 0
    assert rows[("flat", 64)]["inter_node_payload_bytes_per_gpu"] > 2 * bb.numel
    # node-local: only the prompt/head (re-gather, fp32 gradients) cross, the frozen weights stay home
    assert rows[("node_local", 64)]["inter_node_payload_bytes_per_gpu"] == 2 * t + 4 * t
    assert rows[("replicated", 64)]["inter_node_payload_bytes_per_gpu"] == 4 * t
    assert rows[("flat", 64)]["efficiency"] < rows[("node_local", 64)]["efficiency"] < 1
    assert rows[("replicated", 64)]["memory_bytes_per_gpu"] > rows[("node_local", 64)]["memory_bytes_per_gpu"]


def test_shipped_thresholds_are_the_files():
    for layout, (path, threshold) in scaling.SHIPPED.items():
        zero = json.loads((REPO / path).read_text())["zero_optimization"]
        got = zero.get("stage3_param_persistence_threshold", "auto")
        assert (None if got == "auto" else got) == (threshold if zero["stage"] == 3 else None), layout


def test_cli_prints_every_layout_and_size(capsys):
    scaling.main(["--gpus", "8", "64", "--tokens-per-gpu", "20000"])
    out = capsys.readouterr().out
    assert out.count("| flat |") == 2 and out.count("| node_local |") == 2 and out.count("| replicated |") == 2

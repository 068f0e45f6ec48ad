"""The memory calculator: its terms by hand, and its activation formula against what autograd saves."""
import pytest
import torch

import deepprompt.prompts  # noqa: F401  (registers the methods)
from deepprompt.config import load_config
from deepprompt.memory import GIB, Workload, activation_bytes_per_layer, as_backbone, estimate, layout_of, main
from deepprompt.models.backbones.glm import GLMAdapter
from deepprompt.models.glm.config import PRESETS, GLMConfig
from deepprompt.models.glm.model import GLMModel
from deepprompt.registry import PROMPTS


H = 4096
LAYER_SMALL = 13 * H  # two LayerNorms (4h) + biases: qkv 3h, dense h, h_to_4h 4h, 4h_to_h h; all <= 10h
PERSISTENT = 48 * LAYER_SMALL + 2 * H  # + the final LayerNorm


def test_terms_by_hand_for_glm_10b_on_8_gpus():
    cfg = PRESETS["glm-xxlarge"]
    e = estimate(cfg, Workload(world=8, micro_batch=16, seq=128, prompt_length=16))
    n = cfg.num_params()
    # "auto" persistence (10h) keeps biases and LayerNorms whole on every rank, next to their shard
    assert e["frozen_weights"] == pytest.approx(2 * ((n - PERSISTENT) / 8 + PERSISTENT * (1 + 1 / 8)))
    t = 16 * 48 * 2 * 4096 + 4097 * 2  # prefix of every layer + a 2-label classification head
    assert e["prompts_heads_and_grads"] == 2 * t * 2
    assert e["optimizer_state"] == t * 12 / 8  # fp32 master + 2 Adam moments, sharded
    # ZeRO-3 keeps stage3_max_live_parameters (1e9) elements gathered from the forward into the
    # backward, plus the layer in flight (its matrices: 12 h^2), in bf16
    assert e["gathered_working_set"] == (1e9 + 12 * H * H) * 2
    assert e["total"] == pytest.approx(sum(v for k, v in e.items() if k != "total"))
    one = estimate(cfg, Workload(world=1))
    assert one["frozen_weights"] / GIB == pytest.approx(18.4, abs=0.1)  # 9.88B x 2 bytes
    assert estimate(cfg, Workload(world=1, offload_params=True))["frozen_weights"] == 0


def test_a_threshold_above_the_weight_matrices_replicates_the_backbone():
    """What the old "auto" (largest prompt tensor + 1) did with P = 128: every attention.dense (h²
    = 16.8M) and QKV (3h² = 50.3M) of GLM-10B stayed whole on every rank."""
    cfg = PRESETS["glm-xxlarge"]
    n = cfg.num_params()
    old = estimate(cfg, Workload(world=64, persistence_threshold=128 * 48 * 2 * H + 1))["frozen_weights"]
    matrices_whole = 48 * 4 * H * H  # qkv + dense of every layer
    assert old > 2 * matrices_whole
    fixed = estimate(cfg, Workload(world=64))["frozen_weights"]
    assert fixed == pytest.approx(2 * ((n - PERSISTENT) / 64 + PERSISTENT * (1 + 1 / 64)))
    assert fixed < old / 10


def test_layouts_by_hand_for_glm_10b_on_64_gpus():
    cfg = PRESETS["glm-xxlarge"]
    n = cfg.num_params()
    node = estimate(cfg, Workload(world=64, layout="node_local", ranks_per_node=8))
    share = 1 / 64 + 1 / 8  # primary shard over all ranks + secondary over the node
    assert node["frozen_weights"] == pytest.approx(2 * ((n - PERSISTENT) * share + PERSISTENT * (1 + share)))
    rep = estimate(cfg, Workload(world=64, layout="replicated"))
    assert rep["frozen_weights"] == 2 * n and rep["gathered_working_set"] == 0
    # no zero.Init, so torch's own linear: 7 s h fewer saved elements per layer than under ZeRO-3
    assert node["activations"] - rep["activations"] == 48 * 2 * 16 * 7 * 128 * H


def test_transfers_by_hand_for_glm_10b():
    cfg = PRESETS["glm-xxlarge"]
    bb = as_backbone(cfg)
    t = 16 * 48 * 2 * H + (H + 1) * 2
    flat = {x.what.split(":")[0]: x for x in layout_of(Workload(world=64)).transfers(bb, Workload(world=64))}
    assert len(flat) == 5
    sharded = cfg.num_params() - PERSISTENT
    assert flat["forward"].payload == 2 * sharded and flat["forward"].group == "world"
    # the backward needs every layer's matrices but layer 0's QKV; 1e9 elements of them stay gathered
    # from the forward (stage3_max_live_parameters; the reuse distance alone would keep 3 layers)
    assert flat["backward"].payload == 2 * (48 * 12 * H * H - 3 * H * H - 1e9)
    assert estimate(cfg, Workload(world=64, max_live=0))["gathered_working_set"] == 3 * 12 * H * H * 2 + 12 * H * H * 2
    assert flat["persistent"].payload == 2 * PERSISTENT
    assert flat["prompt"].payload == 2 * t and flat["prompt"].group == "world"
    assert flat["gradients"].payload == 2 * t and flat["gradients"].group == "world"
    node = layout_of(Workload(world=64, layout="node_local")).transfers(bb, Workload(world=64, layout="node_local"))
    groups = {x.what.split(":")[0]: x.group for x in node}
    assert groups == {"forward": "node", "backward": "node", "persistent": "world", "prompt": "world",
                      "gradients": "world"}
    rep = layout_of(Workload(world=64, layout="replicated")).transfers(bb, Workload(world=64, layout="replicated"))
    assert [(x.op, x.payload) for x in rep] == [("all_reduce", 2 * t)]


@pytest.mark.parametrize("zero3_linear", [True, False])
@pytest.mark.parametrize("dtype,wb,dropout", [(torch.float32, 4, 0.1), (torch.bfloat16, 2, 0.1), (torch.float32, 4, 0.0)])
def test_activation_formula_matches_what_autograd_saves(dtype, wb, dropout, zero3_linear, monkeypatch):
    from deepspeed.runtime.zero.linear import zero3_linear_wrap

    # ZeRO-3's zero.Init swaps F.linear for DeepSpeed's (and leaves it swapped): measure both
    monkeypatch.setattr(torch.nn.functional, "linear", zero3_linear_wrap if zero3_linear else torch._C._nn.linear)
    torch.manual_seed(0)
    # attention dropout stays 0: on CPU it sends scaled_dot_product_attention to its unfused math
    # kernel (per-head scores kept), while the GPU kernels the formula is for keep only a seed for it
    cfg = GLMConfig(vocab_size=100, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                    max_position_embeddings=64, hidden_dropout=dropout, attention_dropout=0.0)
    model = GLMModel(cfg).to(dtype).train().requires_grad_(False)
    adapter = GLMAdapter(model)
    prompt = PROMPTS.get("prefix")(load_config(None, ["prompt.length=5", "prompt.dropout=0"]).prompt, adapter.spec())
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t
    adapter.set_prefix(prompt.to(dtype)(3).layer_kv)  # the prompt's own saved index is not the backbone's
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randint(0, 100, (3, 20))).last_hidden_state
    w = Workload(world=1, micro_batch=3, seq=20, prompt_length=5, weight_bytes=wb, dropout=dropout > 0, mask_bytes=wb,
                 zero3_linear=zero3_linear)
    predicted = cfg.num_hidden_layers * activation_bytes_per_layer(cfg, w)
    assert 0.9 * predicted <= sum(saved.values()) <= predicted  # layer 0 keeps a little less


def test_cli_prints_a_row_per_term(capsys):
    main(["--model", "glm-xxlarge", "--gpus", "1", "8", "16", "64"])
    out = capsys.readouterr().out
    assert "64 GPU" in out and "frozen_weights" in out and "activations" in out and "total" in out
    main(["--model", "glm-xxlarge", "--gpus", "64", "--layout", "replicated"])
    assert "layout=replicated" in capsys.readouterr().out

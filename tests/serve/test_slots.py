"""LoRA slots sized to the load (serve/slots.py), without an engine."""

import json

import pytest

from loraplex.serve.engine_args import parse_vllm_args, size_lora_slots, vllm_argv
from loraplex.serve.settings import ServeSettings
from loraplex.serve.slots import MIB, adaptable_in_out, fused_copy_elements, plan_slots

SMOLLM2 = {  # SmolLM2-135M's config.json, the fields that matter
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "num_hidden_layers": 30,
    "torch_dtype": "bfloat16",
}


@pytest.fixture
def smollm2_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(SMOLLM2))
    return tmp_path


def test_sum_of_in_and_out_counts_every_adaptable_projection():
    # q 576+576, k 576+192, v 576+192, o 576+576, gate/up 576+1536 each, down 1536+576
    per_layer = 1152 + 768 + 768 + 1152 + 2112 + 2112 + 2112
    assert adaptable_in_out(SMOLLM2) == 30 * per_layer


def plan(model_dir, **overrides):
    kwargs = dict(max_rank=16, dtype="auto", max_num_seqs=128, budget_mib=2048, explicit=None)
    return plan_slots(model_dir=model_dir, **{**kwargs, **overrides})


def test_slots_follow_the_concurrency_when_memory_is_cheap(smollm2_dir):
    p = plan(smollm2_dir)
    assert p.slot_bytes == 16 * adaptable_in_out(SMOLLM2) * 2  # bf16
    assert p.max_loras == 128 and p.chosen


def test_the_fused_cpu_copy_counts_in_each_slot(smollm2_dir):
    """loraplex's CPU wrapper keeps a fused copy per slot: per module, A side by side
    and B block-diagonal, the inner width (slices × rank) padded to 32."""
    stack = plan(smollm2_dir).slot_bytes
    both = plan(smollm2_dir, fused_cpu_copy=True).slot_bytes
    # SmolLM2 at rank 16: q/k/v (in 576, out 576+192+192) inner 48 -> 64; o (576 -> 576)
    # and down (1536 -> 576) 16 -> 32; gate/up (576 -> 2 x 1536) 32; 30 layers, bf16.
    per_layer = 64 * (576 + 960) + 32 * (576 + 576) + 32 * (576 + 3072) + 32 * (1536 + 576)
    assert both == stack + per_layer * 30 * 2
    assert fused_copy_elements(SMOLLM2, 16) > 16 * adaptable_in_out(SMOLLM2)


def test_the_budget_caps_the_slots(smollm2_dir):
    p = plan(smollm2_dir, budget_mib=64)
    assert p.max_loras == 64 * MIB // p.slot_bytes
    assert 1 <= p.max_loras < 128


def test_dtype_and_rank_scale_the_slot(smollm2_dir):
    assert plan(smollm2_dir, dtype="float32").slot_bytes == 2 * plan(smollm2_dir).slot_bytes
    assert plan(smollm2_dir, max_rank=32).slot_bytes == 2 * plan(smollm2_dir).slot_bytes


def test_an_explicit_max_loras_wins(smollm2_dir):
    p = plan(smollm2_dir, explicit=3)
    assert p.max_loras == 3 and not p.chosen and p.slot_bytes is not None


def test_a_model_of_unknown_shape_gets_a_fixed_default(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "mystery"}))
    p = plan(tmp_path)
    assert p.max_loras == 8 and p.slot_bytes is None


def sized(model_dir, passthrough, **settings):
    s = ServeSettings(base_model=str(model_dir), quantization="none", **settings)
    args = parse_vllm_args(vllm_argv(s, passthrough))
    return size_lora_slots(s, args, passthrough), args


def test_serve_sizes_slots_from_max_num_seqs_and_makes_room_in_the_cpu_tier(smollm2_dir):
    slots, args = sized(smollm2_dir, ["--max-num-seqs", "64"])
    assert args.max_loras == slots.max_loras == 64
    assert args.max_cpu_loras >= 64


def test_serve_keeps_an_explicit_max_loras_flag_or_setting(smollm2_dir):
    assert sized(smollm2_dir, ["--max-loras", "5"])[1].max_loras == 5
    assert sized(smollm2_dir, [], max_loras=4)[1].max_loras == 4

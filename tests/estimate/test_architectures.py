"""Any config transformers builds on the meta device works; an unknown one is a clear error."""

import json
from pathlib import Path

import pytest

from loraplex.estimate.architecture import read_architecture
from loraplex.estimate.devices import gpu
from loraplex.estimate.errors import EstimateError
from loraplex.estimate.serve import estimate_serving
from loraplex.estimate.train import estimate_training
from loraplex.trainer.config import load_config

SMALL = dict(
    hidden_size=256,
    intermediate_size=512,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1000,
    max_position_embeddings=4096,
)
CONFIGS = {
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
    "mistral": {"architectures": ["MistralForCausalLM"], "model_type": "mistral"},
    "gemma": {"architectures": ["GemmaForCausalLM"], "model_type": "gemma", "head_dim": 64},
    "qwen3": {"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "head_dim": 64},
}


def write_config(root: Path, name: str, config: dict) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_estimates_any_family_transformers_builds(tmp_path, kind):
    base = write_config(tmp_path, kind, {**SMALL, **CONFIGS[kind]})
    arch = read_architecture(base)
    assert arch.model_type == kind
    assert (arch.layers, arch.hidden, arch.kv_heads) == (2, 256, 2)
    config = load_config(None, {"base_model": str(base), "data.train": ["unused.jsonl"]})
    train = estimate_training(config, base, gpu("l4"))
    assert train.lora_params == 16 * 2 * sum(a.in_features + a.out_features for a in arch.linears)
    assert train.fits
    serve = estimate_serving(base, quantization="none", dtype="bfloat16", max_model_len=4096)
    assert serve.kv_bytes_per_token == 2 * 2 * 2 * arch.head_dim * 2


def test_cpu_serving_counts_the_fused_lora_copies_as_the_gateway_sizes_them(tmp_path):
    """The estimate's fused-copy item equals what `loraplex serve` adds to each slot
    (serve/slots.py) on the CPU, and is absent with vLLM's ops or on a GPU."""
    from loraplex.estimate.serve import FUSED_INNER_ALIGN
    from loraplex.serve import slots

    assert FUSED_INNER_ALIGN == slots.FUSED_INNER_ALIGN
    config = {**SMALL, **CONFIGS["qwen2"]}
    base = write_config(tmp_path, "qwen2", config)
    for rank in (8, 16, 24):  # padded to 32 differently per module
        estimate = estimate_serving(base, dtype="bfloat16", max_loras=4, max_lora_rank=rank)
        named = {i.what: i.bytes for i in estimate.items}
        fused = named["LoRA slots' fused copies (CPU ops)"]
        assert fused == 4 * slots.fused_copy_elements(config, rank) * 2
        assert fused > named["LoRA slots"]
    vllm_ops = estimate_serving(base, dtype="bfloat16", max_loras=4, cpu_lora_ops="vllm")
    on_gpu = estimate_serving(base, dtype="bfloat16", max_loras=4, device=gpu("l4"))
    for other in (vllm_ops, on_gpu):
        assert "LoRA slots' fused copies (CPU ops)" not in {i.what for i in other.items}


def test_unknown_architecture_is_a_clear_error(tmp_path):
    base = write_config(tmp_path, "odd", {**SMALL, "model_type": "not-a-model"})
    with pytest.raises(EstimateError, match="transformers does not know this model"):
        read_architecture(base)


def test_missing_config_is_a_clear_error(tmp_path):
    with pytest.raises(EstimateError, match=r"has no config\.json"):
        read_architecture(tmp_path)

"""Loading a base shard by shard (trainer/sharded.py), on one process.

The meta-device build, materialized from the checkpoint, must be the model
`from_pretrained` loads, tensor for tensor: weights, tied embeddings, the
rotary buffers transformers computes rather than loads, and the LoRA
weights' starting values. The 2-rank FSDP2 runs in test_distributed.py use
the same path and match a one-process run.
"""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loraplex.trainer.config import LoraSettings
from loraplex.trainer.errors import ConfigError
from loraplex.trainer.model import init_lora, load_model, pick_attention
from loraplex.trainer.sharded import build_on_meta, checkpoint_key, materialize

CPU = torch.device("cpu")
LORA = LoraSettings(r=8, alpha=16, dropout=0.0)


def variant(tiny_model_dir: Path, out: Path, tied: bool, shard_size: str | None) -> Path:
    """The tiny model re-saved, with tied embeddings and/or as several safetensors files."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    if tied:
        model.config.tie_word_embeddings = True
        model.lm_head.weight = model.model.embed_tokens.weight
    model.save_pretrained(out, max_shard_size=shard_size or "1GB")
    for path in tiny_model_dir.iterdir():
        if "token" in path.name or path.suffix == ".jinja":
            shutil.copy(path, out / path.name)
    return out


def built_on_meta(base: Path, seed: int):
    model = build_on_meta(base, LORA, CPU, False, pick_attention(base, CPU))
    assert all(p.is_meta for p in model.parameters())
    materialize(model, base, CPU, seed)
    return model


@pytest.mark.parametrize(("tied", "shard_size"), [(False, None), (True, "200KB")])
def test_a_base_materialized_from_meta_is_the_base_from_pretrained(
    tiny_model_dir, tmp_path, tied, shard_size
):
    base = variant(tiny_model_dir, tmp_path / "base", tied, shard_size)
    assert (base / "model.safetensors.index.json").exists() == bool(shard_size)
    loaded = load_model(base, "lora", LORA, CPU, False)
    init_lora(loaded, seed=3)
    built = built_on_meta(base, seed=3)

    expected, actual = dict(loaded.named_parameters()), dict(built.named_parameters())
    assert expected.keys() == actual.keys()
    for name, param in expected.items():
        assert torch.equal(param, actual[name]), name
        assert param.requires_grad == actual[name].requires_grad, name
    buffers = dict(built.named_buffers())
    for name, buffer in loaded.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    head, embed = built.get_output_embeddings(), built.get_input_embeddings()
    assert (head.weight is embed.weight) == tied
    assert any(torch.count_nonzero(p) for n, p in actual.items() if ".lora_A." in n)


def test_lora_starting_values_depend_on_the_seed_only(tiny_model_dir):
    one, other = (load_model(tiny_model_dir, "lora", LORA, CPU, False) for _ in range(2))
    torch.manual_seed(123)  # the global RNG plays no part
    init_lora(one, seed=5)
    init_lora(other, seed=5)
    a = {n: p for n, p in one.named_parameters() if p.requires_grad}
    assert all(torch.equal(p, dict(other.named_parameters())[n]) for n, p in a.items())
    init_lora(other, seed=6)
    changed = [n for n, p in other.named_parameters() if ".lora_A." in n]
    assert all(not torch.equal(a[n], dict(other.named_parameters())[n]) for n in changed)


def test_a_checkpoint_without_a_weight_is_refused_with_its_name(tiny_model_dir, tmp_path):
    base = variant(tiny_model_dir, tmp_path / "base", tied=False, shard_size=None)
    weights = load_file(base / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, base / "model.safetensors")
    model = build_on_meta(base, LORA, CPU, False, pick_attention(base, CPU))
    missing = r"'model.layers.1.mlp.up_proj.weight'.*--distributed ddp"
    with pytest.raises(ConfigError, match=missing):
        materialize(model, base, CPU, seed=0)


def test_checkpoint_key_strips_peft_names():
    name = "base_model.model.model.layers.0.mlp.up_proj.base_layer.weight"
    assert checkpoint_key(name) == "model.layers.0.mlp.up_proj.weight"
    assert checkpoint_key("base_model.model.lm_head.weight") == "lm_head.weight"

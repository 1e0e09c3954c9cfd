"""The base-model fingerprint: same architecture and tensors → same print, whatever the dtype
or the sharding; a different model (even with the same folder name) → a different print."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from loraplex.adapters import AdapterNotServable, fingerprint_base_model


def copy_base(base: Path, to: Path) -> Path:
    return Path(shutil.copytree(base, to))


def edit_base_config(base: Path, **changes) -> None:
    path = base / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_the_id_is_the_folder_name_and_the_print_a_sha256(tiny_model_dir):
    info = fingerprint_base_model(tiny_model_dir)
    assert info.id == tiny_model_dir.name
    assert len(info.fingerprint) == 64 and int(info.fingerprint, 16) >= 0


def test_a_copy_elsewhere_has_the_same_print(tiny_model_dir, tmp_path):
    twin = copy_base(tiny_model_dir, tmp_path / "twin")
    assert (
        fingerprint_base_model(twin).fingerprint
        == fingerprint_base_model(tiny_model_dir).fingerprint
    )


def test_the_same_weights_in_bf16_or_quantized_config_have_the_same_print(tiny_model_dir, tmp_path):
    bf16 = copy_base(tiny_model_dir, tmp_path / "bf16")
    weights = bf16 / "model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(weights).items()}, str(weights))
    edit_base_config(bf16, dtype="bfloat16", quantization_config={"quant_method": "bitsandbytes"})
    assert (
        fingerprint_base_model(bf16).fingerprint
        == fingerprint_base_model(tiny_model_dir).fingerprint
    )


def test_sharding_does_not_change_the_print(tiny_model_dir, tmp_path):
    sharded = copy_base(tiny_model_dir, tmp_path / "sharded")
    tensors = load_file(sharded / "model.safetensors")
    (sharded / "model.safetensors").unlink()
    names = sorted(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(sharded / shard))
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    # A second copy of the weights in another layout, as Mistral's repositories ship:
    # the index says which files are the model.
    save_file({"other.layout": torch.zeros(2)}, str(sharded / "consolidated.safetensors"))
    assert (
        fingerprint_base_model(sharded).fingerprint
        == fingerprint_base_model(tiny_model_dir).fingerprint
    )


def test_a_different_model_under_the_same_name_has_another_print(
    tiny_model_dir, other_base_dir, tmp_path
):
    impostor = copy_base(other_base_dir, tmp_path / tiny_model_dir.name)
    ours, theirs = fingerprint_base_model(tiny_model_dir), fingerprint_base_model(impostor)
    assert ours.id == theirs.id
    assert ours.fingerprint != theirs.fingerprint


def test_an_architecture_field_changes_the_print_even_with_equal_shapes(tiny_model_dir, tmp_path):
    other = copy_base(tiny_model_dir, tmp_path / "other")
    edit_base_config(other, model_type="mistral", architectures=["MistralForCausalLM"])
    assert (
        fingerprint_base_model(other).fingerprint
        != fingerprint_base_model(tiny_model_dir).fingerprint
    )


def test_a_renamed_tensor_changes_the_print(tiny_model_dir, tmp_path):
    other = copy_base(tiny_model_dir, tmp_path / "other")
    weights = other / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.extra.weight"] = tensors.pop("model.norm.weight")
    save_file(tensors, str(weights))
    assert (
        fingerprint_base_model(other).fingerprint
        != fingerprint_base_model(tiny_model_dir).fingerprint
    )


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("no-config", "config.json is missing or unreadable"),
        ("no-weights", "has no .safetensors weights"),
        ("truncated", "model.safetensors are unreadable: the file is truncated"),
        ("not-a-dir", "is not a directory"),
    ],
)
def test_a_broken_base_is_refused_saying_why(tiny_model_dir, tmp_path, breakage, message):
    base = copy_base(tiny_model_dir, tmp_path / "base")
    if breakage == "no-config":
        (base / "config.json").unlink()
    elif breakage == "no-weights":
        (base / "model.safetensors").unlink()
    elif breakage == "truncated":
        weights = base / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    else:
        base = base / "config.json"
    with pytest.raises(AdapterNotServable, match=message):
        fingerprint_base_model(base)

"""Validation at the door: each kind of unservable adapter is refused with its own message.

Every bad adapter is a valid one (`adapter_dir`, a PEFT LoRA for the tiny
model) with one thing broken: a config key edited, or the safetensors file
rewritten with the `safetensors` library.
"""

import json
import shutil

import pytest
import torch

from loraplex.adapters import AdapterNotServable, validate_adapter_dir
from tests.adapters.conftest import edit_config, rewrite_tensors

Q_A = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"


def refused(adapter, message: str, **kwargs) -> None:
    with pytest.raises(AdapterNotServable) as excinfo:
        validate_adapter_dir(adapter, **kwargs)
    assert message in str(excinfo.value), str(excinfo.value)


def test_valid_adapter_is_accepted_with_its_settings(adapter_dir, tiny_model_dir):
    settings = validate_adapter_dir(adapter_dir, base_model=tiny_model_dir)
    assert settings.r == 8
    assert settings.lora_alpha == 16
    assert settings.use_rslora is False
    assert settings.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]


def test_refuses_a_directory_without_adapter_config(copy_adapter):
    adapter = copy_adapter()
    (adapter / "adapter_config.json").unlink()
    refused(adapter, "is not a PEFT adapter: adapter_config.json is missing")


def test_refuses_a_path_that_is_not_a_directory(tmp_path):
    refused(tmp_path / "nowhere", "is not a directory")


def test_refuses_an_unreadable_adapter_config(copy_adapter):
    adapter = copy_adapter()
    (adapter / "adapter_config.json").write_text("{not json")
    refused(adapter, "adapter_config.json is unreadable")


def test_refuses_other_peft_methods(copy_adapter):
    refused(edit_config(copy_adapter(), peft_type="IA3"), "not a LoRA adapter: peft_type is 'IA3'")


def test_refuses_missing_safetensors(copy_adapter):
    adapter = copy_adapter()
    (adapter / "adapter_model.safetensors").unlink()
    refused(adapter, "adapter_model.safetensors is missing")


def test_missing_safetensors_beside_a_bin_file_says_how_to_fix_it(copy_adapter):
    adapter = copy_adapter()
    (adapter / "adapter_model.safetensors").rename(adapter / "adapter_model.bin")
    refused(adapter, "save with safe_serialization=True")


@pytest.mark.parametrize(
    "content",
    [b"", b"\x01\x02", b"\xff" * 8 + b"{}", (20).to_bytes(8, "little") + b"not a json header..."],
    ids=["empty", "short", "huge-header", "garbage-header"],
)
def test_refuses_corrupt_safetensors(copy_adapter, content):
    adapter = copy_adapter()
    (adapter / "adapter_model.safetensors").write_bytes(content)
    refused(adapter, "adapter_model.safetensors is corrupt")


def test_refuses_truncated_safetensors(copy_adapter):
    path = copy_adapter() / "adapter_model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    refused(path.parent, "adapter_model.safetensors is corrupt: the file is truncated: tensor")


def test_refuses_safetensors_with_trailing_bytes(copy_adapter):
    path = copy_adapter() / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    refused(path.parent, "adapter_model.safetensors is corrupt: the tensors take")


def test_refuses_safetensors_whose_header_lies_about_a_shape(copy_adapter):
    path = copy_adapter() / "adapter_model.safetensors"
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    header[Q_A]["shape"] = [8, 64]  # the data is still 8 x 128 floats
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + length :])
    refused(
        path.parent, f"adapter_model.safetensors is corrupt: tensor {Q_A}: 4096 bytes for shape"
    )


def test_refuses_safetensors_without_tensors(copy_adapter):
    adapter = rewrite_tensors(copy_adapter(), lambda tensors: {})
    refused(adapter, "holds no tensors")


def test_refuses_a_rank_that_is_not_a_vllm_slot(copy_adapter):
    refused(edit_config(copy_adapter(), r=24), "rank 24 is not a vLLM rank slot; use 16 or 32")


def test_refuses_a_rank_above_the_servers_maximum(copy_adapter):
    refused(
        edit_config(copy_adapter(), r=32),
        "rank 32 is above the server's maximum rank 16",
        max_rank=16,
    )


def test_accepts_a_higher_rank_when_the_server_allows_it(adapter_dir):
    assert validate_adapter_dir(adapter_dir, max_rank=8).r == 8


def test_refuses_a_rank_that_is_not_a_number(copy_adapter):
    refused(
        edit_config(copy_adapter(), r=True), "rank True is not a vLLM rank slot; use one of 1, 8"
    )


def test_refuses_a_config_without_lora_alpha(copy_adapter):
    refused(edit_config(copy_adapter(), lora_alpha=None), "has no lora_alpha, which vLLM requires")


def test_refuses_a_config_with_an_invalid_value(copy_adapter):
    refused(edit_config(copy_adapter(), lora_alpha="strong"), "has an invalid value: lora_alpha")


def test_refuses_a_config_that_is_not_an_object(copy_adapter):
    adapter = copy_adapter()
    (adapter / "adapter_config.json").write_text("[1, 2]")
    refused(adapter, "adapter_config.json is not a JSON object")


def test_refuses_dora(copy_adapter):
    refused(edit_config(copy_adapter(), use_dora=True), "DoRA adapters (use_dora=true)")


def test_refuses_modules_to_save(copy_adapter):
    adapter = edit_config(copy_adapter(), modules_to_save=["lm_head"])
    refused(adapter, "modules_to_save ['lm_head'] is not served by vLLM")


def test_refuses_trained_biases(copy_adapter):
    refused(edit_config(copy_adapter(), bias="all"), "bias='all' is not served by vLLM")


@pytest.mark.parametrize(
    ("key", "value"), [("rank_pattern", {"q_proj": 16}), ("alpha_pattern", {"q_proj": 32})]
)
def test_refuses_per_module_ranks_and_alphas(copy_adapter, key, value):
    refused(edit_config(copy_adapter(), **{key: value}), f"{key} is set")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lora_bias": True}, "LoRA bias (lora_bias=true) is not served"),
        ({"layer_replication": [[0, 1]]}, "layer_replication is not served"),
        ({"use_qalora": True}, "QALoRA (use_qalora=true) is not served"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights='pissa' also changes the base"),
    ],
)
def test_refuses_peft_features_vllm_does_not_serve(copy_adapter, changes, message):
    refused(edit_config(copy_adapter(), **changes), message)


@pytest.mark.parametrize("module", ["embed_tokens", "lm_head"])
def test_refuses_embedding_and_output_head_targets(copy_adapter, module):
    adapter = edit_config(copy_adapter(), target_modules=["q_proj", module])
    refused(adapter, f"LoRA on {module} is not served; target linear layers")


def test_refuses_empty_target_modules(copy_adapter):
    refused(edit_config(copy_adapter(), target_modules=[]), "target_modules is empty")


def test_refuses_a_target_module_the_base_lacks(copy_adapter, tiny_model_dir):
    adapter = edit_config(copy_adapter(), target_modules=["q_proj", "c_attn"])
    refused(
        adapter,
        "target module c_attn does not exist in the base model; its linear layers are "
        "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj",
        base_model=tiny_model_dir,
    )


def test_refuses_a_target_module_that_is_not_linear(copy_adapter, tiny_model_dir):
    adapter = edit_config(copy_adapter(), target_modules=["q_proj", "input_layernorm"])
    refused(
        adapter,
        "target module input_layernorm is not a linear layer of the base model "
        "(its weight has shape [128])",
        base_model=tiny_model_dir,
    )


def test_target_modules_match_by_suffix_as_in_peft(copy_adapter, tiny_model_dir):
    targets = ["self_attn.q_proj", "k_proj", "v_proj", "model.layers.0.self_attn.o_proj"]
    adapter = edit_config(copy_adapter(), target_modules=targets)
    assert validate_adapter_dir(adapter, base_model=tiny_model_dir).r == 8


def test_refuses_tensors_for_a_layer_the_base_lacks(copy_adapter, tiny_model_dir):
    # A regular expression in target_modules leaves the tensor names to be checked.
    def move(tensors):
        return {k.replace("layers.1.", "layers.7."): v for k, v in tensors.items()}

    adapter = rewrite_tensors(copy_adapter(), move)
    edit_config(adapter, target_modules=r".*\.(q|k|v|o)_proj")
    refused(
        adapter,
        "targets model.layers.7.self_attn.k_proj, which does not exist in the base model",
        base_model=tiny_model_dir,
    )


def test_refuses_a_lora_a_without_its_lora_b(copy_adapter):
    q_b = Q_A.replace("lora_A", "lora_B")
    adapter = rewrite_tensors(copy_adapter(), lambda t: {k: v for k, v in t.items() if k != q_b})
    refused(adapter, f"tensor {q_b} is missing: every LoRA module needs both lora_A and lora_B")


def test_refuses_tensor_shapes_that_do_not_fit_the_base(copy_adapter, tiny_model_dir):
    def narrow(tensors):
        return {**tensors, Q_A: torch.zeros(8, 64)}

    adapter = rewrite_tensors(copy_adapter(), narrow)
    refused(
        adapter,
        f"tensor {Q_A} has shape [8, 64], but the base model needs [8, 128]",
        base_model=tiny_model_dir,
    )


def test_shapes_are_only_checked_against_a_base(copy_adapter):
    adapter = rewrite_tensors(copy_adapter(), lambda t: {**t, Q_A: torch.zeros(8, 64)})
    assert validate_adapter_dir(adapter).r == 8


def test_refuses_tensors_whose_rank_differs_from_the_config(copy_adapter):
    refused(edit_config(copy_adapter(), r=16), "has rank 8, the config says r=16")


def test_refuses_tensors_that_are_not_lora_weights(copy_adapter):
    adapter = rewrite_tensors(copy_adapter(), lambda t: {**t, "model.norm.weight": torch.ones(8)})
    refused(adapter, "tensor model.norm.weight is not a LoRA A/B weight")


def test_refuses_tensors_that_are_not_matrices(copy_adapter):
    adapter = rewrite_tensors(copy_adapter(), lambda t: {**t, Q_A: torch.zeros(8, 128, 1)})
    refused(adapter, "has shape [8, 128, 1]; LoRA weights are 2-D")


def test_refuses_an_adapter_trained_on_a_different_base(
    copy_adapter, tiny_model_dir, other_base_dir
):
    # Same attention shapes, so every tensor fits: only the fingerprint differs.
    adapter = edit_config(copy_adapter(), base_model_name_or_path=str(other_base_dir))
    refused(
        adapter,
        f"the adapter was trained on {other_base_dir}, which is a different model from "
        f"{tiny_model_dir}",
        base_model=tiny_model_dir,
    )


def test_accepts_an_adapter_trained_on_a_copy_of_the_base(copy_adapter, tiny_model_dir, tmp_path):
    twin = shutil.copytree(tiny_model_dir, tmp_path / "twin")
    adapter = edit_config(copy_adapter(), base_model_name_or_path=str(twin))
    assert validate_adapter_dir(adapter, base_model=tiny_model_dir).r == 8

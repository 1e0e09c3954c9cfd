"""Tampered or missing stored bytes are refused, loudly, on both backends."""

import re

import pytest

from loraplex.adapters import AdapterNotFound, IntegrityError, Store


def flip_a_byte(store: Store, key: str, offset: int = 100) -> None:
    data = bytearray(store.backend.read(key))
    data[offset] ^= 0x01
    store.backend.write(key, bytes(data))


@pytest.mark.parametrize("file", ["adapter_model.safetensors", "adapter_config.json"])
def test_a_flipped_byte_is_refused_by_verify_fetch_and_pull(
    store: Store, adapter_dir, tmp_path, file
):
    store.publish(adapter_dir, "chat")
    flip_a_byte(store, f"chat/v1/{file}")

    with pytest.raises(IntegrityError, match=f"chat@1: {file} does not match its manifest"):
        store.verify("chat")
    with pytest.raises(IntegrityError, match=f"chat@1: {file} does not match its manifest"):
        store.fetch("chat", tmp_path / "cache")
    assert not (tmp_path / "cache" / "chat" / "v1").exists()  # nothing half-fetched is cached
    with pytest.raises(IntegrityError, match=file):
        store.pull("chat", tmp_path / "out")


def test_a_missing_file_is_refused(store: Store, adapter_dir, tmp_path):
    store.publish(adapter_dir, "chat")
    store.backend.delete("chat/v1/adapter_model.safetensors")
    with pytest.raises(
        IntegrityError, match=re.escape("chat@1: adapter_model.safetensors is missing")
    ):
        store.fetch("chat", tmp_path / "cache")


def test_a_version_deleted_during_a_fetch_is_not_found_not_corrupt(
    store: Store, adapter_dir, tmp_path
):
    manifest = store.publish(adapter_dir, "chat")
    store.delete("chat@1", force=True)  # after the fetcher resolved it
    with pytest.raises(AdapterNotFound, match="'chat@1' was deleted from"):
        store._verified_blobs(manifest)


def test_a_truncated_file_is_refused(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    key = "chat/v1/adapter_model.safetensors"
    store.backend.write(key, store.backend.read(key)[:-1])
    with pytest.raises(IntegrityError, match=re.escape("adapter_model.safetensors does not match")):
        store.verify("chat")


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"latest": "1"}', b"\xff\xfe"])
def test_a_corrupt_aliases_file_is_an_integrity_error(store: Store, adapter_dir, content):
    store.publish(adapter_dir, "chat")
    store.backend.write("chat/aliases.json", content)
    with pytest.raises(IntegrityError, match=re.escape("/chat/aliases.json is corrupt")):
        store.resolve("chat")
    with pytest.raises(IntegrityError, match="is corrupt"):
        store.set_alias("chat", "prod", 1)
    assert store.resolve("chat@1").version == 1  # an exact version needs no alias


def test_a_corrupt_manifest_is_an_integrity_error(store: Store, adapter_dir):
    store.publish(adapter_dir, "chat")
    store.backend.write("chat/v1/manifest.json", b'{"name": "chat"}')
    with pytest.raises(IntegrityError, match=r"the manifest of chat@1 in .* is corrupt"):
        store.resolve("chat")

"""The storage primitives under the store, on both backends.

`create` and `replace_if` are what make racing writers safe; the store's
concurrency tests rely on them, so their contract is checked here directly.
"""

import pytest

from loraplex.adapters import Store


@pytest.fixture
def backend(store: Store):
    return store.backend


def test_read_of_a_missing_key_is_none(backend):
    assert backend.read("a/b.json") is None
    assert backend.read_versioned("a/b.json") == (None, None)


def test_write_then_read_and_overwrite(backend):
    backend.write("a/b.json", b"one")
    backend.write("a/b.json", b"two")
    assert backend.read("a/b.json") == b"two"


def test_create_is_exclusive(backend):
    assert backend.create("a/claim", b"first") is True
    assert backend.create("a/claim", b"second") is False
    assert backend.read("a/claim") == b"first"


def test_replace_if_is_a_compare_and_swap(backend):
    assert backend.replace_if("a/x.json", b"v1", None) is True  # None: only if still absent
    assert backend.replace_if("a/x.json", b"again", None) is False
    data, token = backend.read_versioned("a/x.json")
    assert data == b"v1"
    assert backend.replace_if("a/x.json", b"v2", token) is True
    assert backend.replace_if("a/x.json", b"v3", token) is False  # stale token
    assert backend.read("a/x.json") == b"v2"


def test_children_lists_one_level_and_hides_dot_names(backend):
    backend.write("chat/v1/manifest.json", b"{}")
    backend.write("chat/v2/.claim", b"")
    backend.write("chat/aliases.json", b"{}")
    backend.write("other/v1/x", b"")
    assert backend.children("") == ["chat", "other"]
    assert backend.children("chat") == ["aliases.json", "v1", "v2"]
    assert backend.children("chat/v2") == []
    assert backend.children("missing") == []


def test_walk_lists_every_key_below_and_hides_dot_names(backend):
    backend.write("chat/v1/manifest.json", b"{}")
    backend.write("chat/v1/adapter_config.json", b"{}")
    backend.write("chat/v2/.claim", b"")
    backend.write("chat/aliases.json", b"{}")
    backend.write("other/v1/x", b"")
    assert backend.walk("chat") == ["aliases.json", "v1/adapter_config.json", "v1/manifest.json"]
    assert backend.walk("") == [
        "chat/aliases.json",
        "chat/v1/adapter_config.json",
        "chat/v1/manifest.json",
        "other/v1/x",
    ]
    assert backend.walk("missing") == []


def test_walk_stamped_changes_a_stamp_only_when_its_object_changes(backend):
    backend.write("chat/v1/manifest.json", b"{}")
    backend.write("chat/aliases.json", b'{"latest": 1}')
    backend.write("chat/.hidden", b"")
    first = backend.walk_stamped("")
    assert sorted(first) == backend.walk("") == ["chat/aliases.json", "chat/v1/manifest.json"]
    assert backend.walk_stamped("") == first
    backend.write("chat/aliases.json", b'{"latest": 2}')
    second = backend.walk_stamped("")
    assert second["chat/aliases.json"] != first["chat/aliases.json"]
    assert second["chat/v1/manifest.json"] == first["chat/v1/manifest.json"]


def test_a_key_under_a_file_is_absent(backend):
    backend.write("notes.txt", b"a file")
    assert backend.read("notes.txt/aliases.json") is None
    assert backend.children("notes.txt") == []
    assert backend.walk("notes.txt") == []


def test_delete_and_delete_tree(backend):
    backend.write("chat/v1/a", b"1")
    backend.write("chat/v1/b", b"2")
    backend.write("chat/v2/a", b"3")
    backend.delete("chat/v1/a")
    backend.delete("chat/v1/never-there")
    assert backend.read("chat/v1/a") is None
    assert backend.read("chat/v1/b") == b"2"
    backend.delete_tree("chat/v1")
    assert backend.read("chat/v1/b") is None
    assert backend.children("chat/v1") == []
    assert backend.read("chat/v2/a") == b"3"
    # An emptied folder may still be listed (SeaweedFS keeps it; AWS S3 does not):
    # the store never relies on it being gone, only on a version's manifest.
    assert set(backend.children("chat")) <= {"v1", "v2"}


def test_folders_lists_top_level_names_after_a_name(backend):
    for name in ["a", "a-b", "a_b", "b"]:
        backend.write(f"{name}/v1/manifest.json", b"{}")
    backend.write(".changes/1", b"")  # hidden
    backend.write("notes.txt", b"")  # an object, not a folder
    # Sorted by name, though S3 itself lists `a-b/` before `a/` (byte order of the key).
    assert backend.folders() == ["a", "a-b", "a_b", "b"]
    assert backend.folders("a") == ["a-b", "a_b", "b"]
    assert backend.folders("a-b") == ["a_b", "b"]
    assert backend.folders("a0") == ["a_b", "b"]
    assert backend.folders("b") == []

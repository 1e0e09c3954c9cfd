"""The gateway's adapter index over a real local store: one listing per poll,
reads only of the aliases that changed, and the versions aliases moved to."""

import time

from loraplex.adapters import Store, open_store
from loraplex.serve.index import AdapterIndex, AdapterVersion


class CountingStore(Store):
    """A real store that counts aliases.json reads (a spy, not a mock): every
    read, `aliases` included, goes through `aliases_with_digest`."""

    reads = 0

    def aliases_with_digest(self, name: str) -> tuple[dict[str, int], str]:
        self.reads += 1
        return super().aliases_with_digest(name)


def seeded(tmp_path, names: int, url: str | None = None) -> CountingStore:
    store = CountingStore(open_store(url or f"file://{tmp_path}").backend)
    for i in range(names):
        store.backend.write(f"a{i}/v1/manifest.json", b"{}")
        store.backend.write(f"a{i}/aliases.json", b'{"latest": 1}')
    return store


def test_a_poll_reads_only_the_aliases_that_changed(tmp_path):
    store = seeded(tmp_path, 50)
    index = AdapterIndex(store)
    index.refresh()
    assert store.reads == 50 and len(index.names()) == 50
    index.refresh()
    assert store.reads == 50  # nothing changed: one listing, no reads
    store.set_alias("a7", "prod", 1)
    index.refresh()
    assert store.reads == 51
    assert index.aliases("a7") == {"latest": 1, "prod": 1}


def test_versions_aliases_move_to_are_reported_once_after_the_first_refresh(tmp_path):
    store = seeded(tmp_path, 3)
    index = AdapterIndex(store)
    index.refresh()
    assert index.take_moved() == []  # what was there at start is not "moved"
    store.backend.write("a1/v2/manifest.json", b"{}")
    store.set_alias("a1", "latest", 2)
    store.backend.write("new/v1/manifest.json", b"{}")
    store.set_alias("new", "latest", 1)
    index.refresh()
    assert index.take_moved() == [AdapterVersion("a1", 2), AdapterVersion("new", 1)]
    assert index.take_moved() == []
    assert index.alias_moves == 1


class WalkCountingStore(CountingStore):
    """Counts full walks of the store too (a spy, not a mock)."""

    walks = 0

    def alias_stamps(self) -> dict[str, str | None]:
        self.walks += 1
        return super().alias_stamps()


def test_polls_follow_the_change_feed_and_walk_the_store_only_now_and_then(tmp_path):
    store = WalkCountingStore(open_store(f"file://{tmp_path}").backend)
    for i in range(20):
        store.backend.write(f"a{i}/v1/manifest.json", b"{}")
        store.set_alias(f"a{i}", "latest", 1)  # through the store: the feed records it
    index = AdapterIndex(store, full_every=3600)
    index.refresh()
    assert (store.walks, store.reads, len(index.names())) == (1, 20, 20)
    for _ in range(3):
        index.refresh()
    assert (store.walks, store.reads) == (1, 20)  # nothing changed: no walk, no reads
    store.set_alias("a7", "prod", 1)
    store.backend.write("fresh/v1/manifest.json", b"{}")
    store.set_alias("fresh", "latest", 1)
    index.refresh()
    assert (store.walks, store.reads) == (1, 22)  # the two changed names, from the feed
    assert index.aliases("a7") == {"latest": 1, "prod": 1}
    assert "fresh" in index.names() and not index.last_refresh_walked
    assert index.take_moved() == [AdapterVersion("a7", 1), AdapterVersion("fresh", 1)]


def test_a_name_whose_last_version_is_deleted_leaves_the_index_by_the_feed(tmp_path, random_lora):
    store = open_store(f"file://{tmp_path}")
    adapter_dir = random_lora("lora", r=8)
    store.publish(adapter_dir, "gone")
    store.publish(adapter_dir, "kept")
    index = AdapterIndex(store, full_every=3600)
    index.refresh()
    assert index.names() == ["gone", "kept"]
    store.delete("gone@1", force=True)
    index.refresh()
    assert index.names() == ["kept"] and not index.last_refresh_walked


def test_a_change_the_feed_missed_is_seen_by_the_next_full_walk(tmp_path):
    """An aliases.json written without a feed entry (an older loraplex, or a writer
    that died between its write and its entry) is caught by the periodic walk."""
    store = seeded(tmp_path, 3)  # raw writes: no feed entries
    index = AdapterIndex(store, full_every=0.2)
    index.refresh()
    store.backend.write("a1/v2/manifest.json", b"{}")
    store.backend.write("a1/aliases.json", b'{"latest": 2}')
    index.refresh()
    assert index.aliases("a1") == {"latest": 1}  # the feed has no word of it yet
    deadline = time.monotonic() + 5
    while index.aliases("a1") != {"latest": 2} and time.monotonic() < deadline:
        time.sleep(0.05)
        index.refresh()
    assert index.aliases("a1") == {"latest": 2} and index.last_refresh_walked

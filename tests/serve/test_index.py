"""The gateway's adapter index over a real local store: one listing per poll,
reads only of the aliases that changed, and the versions aliases moved to."""

from loraplex.adapters import Store, open_store
from loraplex.serve.index import AdapterIndex, AdapterVersion


class CountingStore(Store):
    """A real local store that counts aliases.json reads (a spy, not a mock)."""

    reads = 0

    def aliases(self, name: str) -> dict[str, int]:
        self.reads += 1
        return super().aliases(name)


def seeded(tmp_path, names: int) -> CountingStore:
    store = CountingStore(open_store(f"file://{tmp_path}").backend)
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

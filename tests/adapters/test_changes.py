"""The store's change feed (adapters/changes.py), on both backends: every alias
write leaves an entry, a reader hears each changed name once, a writer's lagging
clock is tolerated, old entries are pruned, and the feed never shows as an adapter."""

import time

from loraplex.adapters import changes
from loraplex.adapters.changes import CHANGES, ChangeFeed


def test_every_alias_change_reaches_a_reader_once(store, adapter_dir):
    feed = ChangeFeed(store.backend)
    assert feed.changed_names() == set()
    store.publish(adapter_dir, "alpha")
    store.publish(adapter_dir, "beta", aliases=["prod"])
    assert feed.changed_names() == {"alpha", "beta"}
    assert feed.changed_names() == set()
    store.set_alias("alpha", "prod", 1)
    assert feed.changed_names() == {"alpha"}
    store.delete("beta@1", force=True)
    assert feed.changed_names() == {"beta"}
    assert store.list_names() == ["alpha"]  # the feed is hidden from adapter listings
    assert list(store.catalog()) == ["alpha"]


def test_an_entry_from_a_writer_whose_clock_lags_is_still_reported(store):
    feed = ChangeFeed(store.backend, lookback=30)
    changes.record(store.backend, "now")
    assert feed.changed_names() == {"now"}
    lagging = time.time_ns() - 10 * 10**9  # 10 s behind the newest entry seen
    store.backend.create(f"{CHANGES}/{lagging:020d}~late~0000", b"")
    assert feed.changed_names() == {"late"}
    assert feed.changed_names() == set()


def test_prune_deletes_entries_older_than_the_retention_and_keeps_the_rest(store):
    old = time.time_ns() - 2 * int(changes.RETAIN * 10**9)
    store.backend.create(f"{CHANGES}/{old:020d}~ancient~0000", b"")
    # Written directly: `record` itself prunes one write in PRUNE_ONE_IN, at random.
    store.backend.create(f"{CHANGES}/{time.time_ns():020d}~recent~0000", b"")
    assert changes.prune(store.backend) == 1
    assert [e.split("~")[1] for e in store.backend.list_folder(CHANGES)] == ["recent"]


def test_prune_deletes_only_the_feeds_own_entries(store):
    """A local `create` stages its object as a dot-file beside its key before linking
    it into place. A prune running meanwhile (any writer's `record` may start one)
    deleted that file, and the other writer's publish failed with FileNotFoundError."""
    staged = f"{CHANGES}/.tmp-inflight"
    store.backend.write(staged, b"x")
    store.backend.create(f"{CHANGES}/{time.time_ns():020d}~recent~0000", b"")
    assert changes.prune(store.backend, retain=0) == 1
    assert store.backend.read(staged) == b"x"
    assert not [e for e in store.backend.list_folder(CHANGES) if "~" in e]


def test_list_folder_pages_after_a_key(store):
    for name in ("a", "b", "c"):
        store.backend.write(f".box/{name}", b"")
    store.backend.write(".box/sub/d", b"")  # a sub-folder's objects are not listed
    assert store.backend.list_folder(".box") == ["a", "b", "c"]
    assert store.backend.list_folder(".box", "a") == ["b", "c"]
    assert store.backend.list_folder(".nothing") == []

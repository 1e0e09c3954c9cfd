"""The alias snapshot on a real S3 store (SeaweedFS): a gateway starting cold
reads one object instead of every aliases.json, and trusts an entry only
where the store's listing shows the very bytes the entry was read from."""

import logging

import pytest

from loraplex.adapters import snapshot
from loraplex.serve.index import AdapterIndex
from tests.serve.test_index import seeded

NAMES = 30


@pytest.mark.s3
def test_a_cold_index_reads_only_what_changed_since_the_snapshot(tmp_path, s3_store_url, caplog):
    store = seeded(tmp_path, NAMES, s3_store_url)
    first = AdapterIndex(store, snapshot_after=10)
    first.refresh()
    assert store.reads == NAMES and first.names_from_snapshot == 0
    assert len(snapshot.read(store.backend)) == NAMES  # written: it had to read 30 names

    store.reads = 0
    caplog.set_level(logging.INFO, logger="loraplex.serve.index")
    cold = AdapterIndex(store, snapshot_after=10)
    cold.refresh()
    assert store.reads == 0 and cold.names_from_snapshot == NAMES
    assert cold.names() == first.names()
    assert all(cold.aliases(n) == first.aliases(n) for n in first.names())
    assert f"{NAMES} of {NAMES} names from the alias snapshot" in caplog.text

    store.set_alias("a7", "prod", 1)  # a change the snapshot has not seen
    store.reads = 0
    later = AdapterIndex(store, snapshot_after=10)
    later.refresh()
    assert store.reads == 1 and later.names_from_snapshot == NAMES - 1
    assert later.aliases("a7") == {"latest": 1, "prod": 1}


@pytest.mark.s3
def test_a_corrupt_snapshot_costs_reads_not_answers(tmp_path, s3_store_url, caplog):
    store = seeded(tmp_path, 5, s3_store_url)
    store.backend.write(snapshot.KEY, b"{not json")
    index = AdapterIndex(store)
    index.refresh()
    assert store.reads == 5 and index.aliases("a3") == {"latest": 1}
    assert "ignoring the unreadable alias snapshot" in caplog.text


@pytest.mark.s3
def test_an_entry_for_other_bytes_is_not_trusted(tmp_path, s3_store_url):
    store = seeded(tmp_path, 3, s3_store_url)
    # Claims a1 has `prod`, for bytes whose MD5 is not what the store lists.
    snapshot.write(store.backend, {"a1": (snapshot.digest(b'{"prod": 1}'), {"prod": 1})})
    index = AdapterIndex(store)
    index.refresh()
    assert index.aliases("a1") == {"latest": 1} and index.names_from_snapshot == 0


@pytest.mark.s3
def test_a_small_store_is_never_written_to(tmp_path, s3_store_url):
    store = seeded(tmp_path, NAMES, s3_store_url)
    AdapterIndex(store).refresh()  # 30 reads: under the default SNAPSHOT_AFTER
    assert store.backend.read(snapshot.KEY) is None


def test_a_local_store_is_never_written_to(tmp_path):
    store = seeded(tmp_path, 30)
    index = AdapterIndex(store, snapshot_after=10)  # read enough, but stamps are no MD5s
    index.refresh()
    assert store.backend.read(snapshot.KEY) is None
    assert index.aliases("a1") == {"latest": 1}


@pytest.mark.s3
def test_the_first_refresh_reads_in_parallel_within_the_clients_pool(
    tmp_path, s3_store_url, caplog
):
    """All of the backend's parallel reads get a pooled connection: past botocore's
    pool urllib3 drops connections and warns for each, in the gateway's log."""
    store = seeded(tmp_path, 200, s3_store_url)
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    index = AdapterIndex(store, snapshot_after=10**9)
    index.refresh()
    assert store.reads == 200 and len(index.names()) == 200
    assert "Connection pool is full" not in caplog.text

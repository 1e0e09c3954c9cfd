"""Racing writers on both backends: no shared version number, no lost alias.

Each writer is its own process (forked, so it inherits the test's S3
environment) with its own `Store`, as publishers on separate machines would
be; all start together behind a barrier so the races really happen.
"""

import multiprocessing
import traceback
from collections.abc import Callable

import pytest

from loraplex.adapters import AdapterNotFound, open_store

WORKERS = 8


def _worker(work: Callable, i: int, barrier, results) -> None:
    try:
        barrier.wait()
        results.put((i, work(i)))
    except BaseException:
        results.put((i, traceback.format_exc()))


def run_together(count: int, work: Callable[[int], object]) -> list:
    """`work(i)` in `count` processes started together; their results, in order of i."""
    ctx = multiprocessing.get_context("fork")
    barrier, results = ctx.Barrier(count, timeout=60), ctx.Queue()
    processes = [
        ctx.Process(target=_worker, args=(work, i, barrier, results)) for i in range(count)
    ]
    for p in processes:
        p.start()
    outcome = dict(results.get(timeout=120) for _ in processes)
    for p in processes:
        p.join(timeout=30)
    failures = [r for r in outcome.values() if isinstance(r, str) and "Traceback" in r]
    assert not failures, failures[0]
    return [outcome[i] for i in range(count)]


def test_parallel_publishers_get_distinct_versions(store_url, store, adapter_dir):
    versions = run_together(
        WORKERS,
        lambda i: open_store(store_url).publish(adapter_dir, "chat", aliases=[f"p{i}"]).version,
    )
    assert sorted(versions) == list(range(1, WORKERS + 1))
    assert store.list_versions("chat") == list(range(1, WORKERS + 1))
    aliases = store.aliases("chat")
    assert aliases["latest"] == WORKERS
    # Every publisher's own alias survived the races and points at its own version.
    assert {f"p{i}": versions[i] for i in range(WORKERS)} == {
        a: v for a, v in aliases.items() if a != "latest"
    }


def test_racing_alias_moves_lose_none(store_url, store, adapter_dir):
    store.publish(adapter_dir, "chat")
    store.publish(adapter_dir, "chat")
    run_together(WORKERS, lambda i: open_store(store_url).set_alias("chat", f"a{i}", 1 + i % 2))
    assert store.aliases("chat") == {
        "latest": 2,
        **{f"a{i}": 1 + i % 2 for i in range(WORKERS)},
    }


def test_racing_moves_of_one_alias_leave_one_winner(store_url, store, adapter_dir):
    for _ in range(WORKERS):
        store.publish(adapter_dir, "chat")
    run_together(WORKERS, lambda i: open_store(store_url).set_alias("chat", "prod", i + 1))
    assert store.aliases("chat")["prod"] in range(1, WORKERS + 1)
    assert store.aliases("chat")["latest"] == WORKERS


def test_concurrent_fetches_of_one_version_share_one_complete_entry(
    store_url, store, adapter_dir, tmp_path
):
    store.publish(adapter_dir, "chat")
    cache = tmp_path / "cache"
    paths = run_together(WORKERS, lambda i: str(open_store(store_url).fetch("chat@1", cache)))
    assert set(paths) == {str(cache / "chat" / "v1")}
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        assert (cache / "chat" / "v1" / file).read_bytes() == (adapter_dir / file).read_bytes()
    assert sorted(p.name for p in (cache / "chat").iterdir()) == ["v1"]  # no staging left


def test_an_alias_move_racing_a_delete_never_points_at_the_deleted_version(
    store_url, store, adapter_dir
):
    # The worst interleaving, forced: another process deletes v1 (forced) in the
    # gap between the mover reading aliases.json and writing it back.
    store.publish(adapter_dir, "chat")
    store.publish(adapter_dir, "chat")
    mover = open_store(store_url)
    replace_if, raced = mover.backend.replace_if, []

    def replace_if_after_a_delete(key: str, data: bytes, token: str | None) -> bool:
        if not raced:
            raced.append(True)
            open_store(store_url).delete("chat@1", force=True)
        return replace_if(key, data, token)

    mover.backend.replace_if = replace_if_after_a_delete
    with pytest.raises(AdapterNotFound, match="'chat@1' does not exist"):
        mover.set_alias("chat", "prod", 1)
    assert raced
    assert store.list_versions("chat") == [2]
    assert store.aliases("chat") == {"latest": 2}

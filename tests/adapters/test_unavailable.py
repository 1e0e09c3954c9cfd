"""A store that cannot be reached says so, quickly, as `StoreUnavailable`."""

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from loraplex.adapters import Store, StoreUnavailable, open_store
from loraplex.adapters.s3 import S3Backend
from tests.fixtures.s3 import CREDENTIALS, free_ports


def test_a_local_store_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot create adapter store file://"):
        open_store(str(tmp_path / "file" / "store"))


def test_a_local_store_removed_under_a_running_process(tmp_path, adapter_dir):
    # An unmounted volume must read as "unavailable" (503), never as "empty" (404),
    # and a publisher must not quietly recreate the root.
    root = tmp_path / "store"
    store = open_store(f"file://{root}")
    store.publish(adapter_dir, "chat")
    shutil.rmtree(root)
    gone = f"adapter store file://{root} is gone"
    for attempt in (
        store.list_names,
        lambda: store.list_versions("chat"),
        lambda: store.aliases("chat"),
        lambda: store.resolve("chat"),
        lambda: store.resolve("chat@1"),
        lambda: store.fetch("chat@1", tmp_path / "cache"),
        lambda: store.publish(adapter_dir, "chat"),
        lambda: store.set_alias("chat", "prod", 1),
    ):
        with pytest.raises(StoreUnavailable, match=gone):
            attempt()
    assert not root.exists()


@pytest.mark.s3
def test_an_s3_bucket_that_does_not_exist(s3_store_url, adapter_dir):
    store = open_store("s3://no-such-bucket-here/adapters")
    message = "adapter store s3://no-such-bucket-here/adapters: bucket no-such-bucket-here does"
    with pytest.raises(StoreUnavailable, match=message):
        store.list_names()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.resolve("chat")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        store.publish(adapter_dir, "chat")


def test_an_s3_endpoint_nobody_listens_on_fails_fast(monkeypatch, tmp_path):
    (port,) = free_ports(1)
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("LORAPLEX_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    store = open_store("s3://adapters/prod")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="adapter store s3://adapters/prod is unreachable"):
        store.resolve("chat")
    assert time.monotonic() - started < 5


def test_an_s3_url_without_a_bucket():
    with pytest.raises(StoreUnavailable, match="use s3://bucket/prefix"):
        open_store("s3:///prefix")


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung store)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def test_an_s3_endpoint_that_never_answers_times_out(monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with silent_server() as port:
        monkeypatch.setenv("LORAPLEX_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
        store = Store(S3Backend("s3://adapters/prod", read_timeout=0.5))
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="s3://adapters/prod is unreachable"):
            store.resolve("chat")
        assert time.monotonic() - started < 3  # two attempts of half a second, not a hang


def test_the_s3_client_keeps_short_timeouts_and_few_retries():
    config = S3Backend("s3://adapters/prod").client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (2.0, 5.0)
    assert config.retries["total_max_attempts"] == 2  # one try and one retry

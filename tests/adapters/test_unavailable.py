"""A store that cannot be reached says so, quickly, as `StoreUnavailable`."""

import shutil
import time

import pytest

from loraplex.adapters import StoreUnavailable, open_store
from tests.fixtures.s3 import CREDENTIALS, free_ports


def test_a_local_store_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="cannot create adapter store file://"):
        open_store(str(tmp_path / "file" / "store"))


def test_a_local_store_removed_under_a_running_process(tmp_path, adapter_dir):
    store = open_store(f"file://{tmp_path / 'store'}")
    store.publish(adapter_dir, "chat")
    shutil.rmtree(tmp_path / "store")
    with pytest.raises(StoreUnavailable, match=f"adapter store file://{tmp_path}/store is gone"):
        store.list_names()


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

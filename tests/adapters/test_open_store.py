"""`open_store`: which backend a URL picks, and the normalized `Store.url` it reports."""

from pathlib import Path

import pytest

from loraplex.adapters import StoreUnavailable, open_store
from loraplex.adapters.local import LocalBackend
from loraplex.adapters.s3 import S3Backend


@pytest.fixture
def in_tmp(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LORAPLEX_STORE", raising=False)
    return tmp_path


def test_the_default_is_a_local_folder_in_the_working_directory(in_tmp):
    store = open_store()
    assert isinstance(store.backend, LocalBackend)
    assert store.url == f"file://{in_tmp}/.loraplex/adapters"
    assert (in_tmp / ".loraplex" / "adapters").is_dir()


def test_the_environment_names_the_store(in_tmp, monkeypatch):
    monkeypatch.setenv("LORAPLEX_STORE", str(in_tmp / "from-env"))
    assert open_store().url == f"file://{in_tmp}/from-env"
    assert open_store(str(in_tmp / "given")).url == f"file://{in_tmp}/given"  # the flag wins


@pytest.mark.parametrize(
    ("url", "where"),
    [
        ("relative/store", "relative/store"),
        ("./relative/store/", "relative/store"),
        ("file://{tmp}/abs", "abs"),
        ("file://localhost{tmp}/abs", "abs"),
        ("file://{tmp}/with%20space", "with space"),
        ("{tmp}/a/../b", "b"),
    ],
)
def test_local_urls_and_paths(in_tmp, url, where):
    store = open_store(url.format(tmp=in_tmp))
    assert store.url == f"file://{in_tmp / where}"
    assert (in_tmp / where).is_dir()


def test_a_home_relative_path(in_tmp, monkeypatch):
    monkeypatch.setenv("HOME", str(in_tmp / "home"))
    assert open_store("~/adapters").url == f"file://{in_tmp}/home/adapters"


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("s3://bucket/team/adapters", "s3://bucket/team/adapters"),
        ("s3://bucket/team/adapters/", "s3://bucket/team/adapters"),
        ("s3://bucket", "s3://bucket"),
    ],
)
def test_s3_urls(url, normalized):
    store = open_store(url)
    assert isinstance(store.backend, S3Backend)
    assert store.url == normalized


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("gs://bucket/x", "unsupported store URL 'gs://bucket/x'"),
        ("file://server/share", "names a remote host; use file:///path"),
        ("s3:///prefix", "use s3://bucket/prefix"),
    ],
)
def test_urls_that_name_no_store_we_can_open(url, message):
    with pytest.raises(StoreUnavailable, match=message):
        open_store(url)

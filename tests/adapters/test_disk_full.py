"""A disk that fills up during a publish: a clear error, and nothing half-written
becomes visible.

The full disk is real: a tmpfs mounted with room for less than the adapter's
files, so the kernel answers ENOSPC in the middle of the publish. Mounting
needs root (as on CI and these machines); elsewhere the test says why it
cannot run.
"""

import os
import subprocess
from pathlib import Path

import pytest

from loraplex.adapters import open_store
from loraplex.adapters.errors import AdapterNotFound, StoreUnavailable


@pytest.fixture
def small_disk(tmp_path: Path, adapter_dir: Path):
    """A tmpfs with room for about half of the adapter's bytes; yields (mount, remount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    half = sum(f.stat().st_size for f in adapter_dir.iterdir()) // 2
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={half}", "tmpfs", mount], check=True)

    def grow(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", mount], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", "-l", mount], check=False)


def test_a_publish_that_runs_out_of_disk_leaves_nothing_visible(small_disk, adapter_dir):
    mount, grow = small_disk
    store = open_store(str(mount / "store"))
    with pytest.raises(StoreUnavailable, match="No space left on device"):
        store.publish(adapter_dir, "chat")
    assert store.list_names() == []
    assert store.list_versions("chat") == []
    with pytest.raises(AdapterNotFound):
        store.resolve("chat")
    assert not list(mount.rglob("manifest.json"))
    assert store.aliases("chat") == {}

    grow(64 * 1024 * 1024)  # space freed: the next publish works
    manifest = store.publish(adapter_dir, "chat")
    assert store.resolve("chat") == manifest
    assert store.verify("chat").ref == manifest.ref

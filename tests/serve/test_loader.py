"""The gateway's adapter loader: a version is fetched once, verified, and its
manifest read once (on S3 every read is a round trip on the first request's path)."""

import asyncio
from pathlib import Path

import prometheus_client

from loraplex.adapters import open_store
from loraplex.serve.index import AdapterVersion
from loraplex.serve.loader import AdapterLoader
from loraplex.serve.metrics import GatewayMetrics


def test_a_cold_adapter_is_fetched_with_one_read_of_its_manifest(random_lora, tmp_path: Path):
    store = open_store(str(tmp_path / "store"))
    store.publish(random_lora("chat"), "chat")
    reads: list[str] = []
    read = store.backend.read
    store.backend.read = lambda key: (reads.append(key), read(key))[1]  # a spy, not a fake
    metrics = GatewayMetrics(prometheus_client.CollectorRegistry())
    loader = AdapterLoader(store, tmp_path / "cache", None, metrics)

    path = asyncio.run(loader.ensure_local(AdapterVersion("chat", 1)))

    assert path == tmp_path / "cache" / "chat" / "v1"
    assert (path / "adapter_model.safetensors").is_file()
    assert reads.count("chat/v1/manifest.json") == 1
    assert asyncio.run(loader.ensure_local(AdapterVersion("chat", 1))) == path
    assert reads.count("chat/v1/manifest.json") == 1  # cached: no read at all

"""The gateway on an S3 store (a real SeaweedFS), and what it does while the
store is unreachable: cached adapters keep serving, others get a 503 that says
so, and service recovers by itself when the store is back.

The outage is real: the gateway reaches SeaweedFS through a TCP relay that
the test closes (connection refused) and opens again.
"""

import asyncio
import socket
import threading
import time

import httpx
import pytest

from loraplex.adapters import open_store
from tests.fixtures.engine import GatewayProcess, free_port
from tests.fixtures.models import make_random_lora
from tests.waiting import eventually

pytestmark = [pytest.mark.engine, pytest.mark.s3]


class Relay:
    """A TCP relay on a fixed local port that can be switched off and on."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        # Open connections, closed by off(): boto3 keeps its connections alive,
        # and asyncio's Server.close_clients() only exists from Python 3.13.
        self.writers: set[asyncio.StreamWriter] = set()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pair = {writer, up_writer}
        self.writers |= pair
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.writers -= pair

    def on(self) -> None:
        async def _start():
            self.server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

        asyncio.run_coroutine_threadsafe(_start(), self.loop).result()

    def off(self) -> None:
        async def _stop():
            self.server.close()
            for writer in list(self.writers):
                writer.transport.abort()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result()
        with pytest.raises(OSError):  # really refused now
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()


@pytest.fixture(scope="module")
def s3_gateway(s3_server, tiny_model_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("s3-gateway")
    url = f"s3://{s3_server.bucket}/gateway-{int(time.time())}"
    relay = Relay(int(s3_server.endpoint_url.rsplit(":", 1)[1]))
    relay.on()
    env = {**s3_server.env, "LORAPLEX_S3_ENDPOINT_URL": f"http://127.0.0.1:{relay.port}"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in s3_server.env.items():
            mp.setenv(key, value)
        store = open_store(url)
        for seed, name in ((61, "cached"), (62, "uncached")):
            store.publish(make_random_lora(tiny_model_dir, work / name, seed=seed), name)
    with GatewayProcess(
        tiny_model_dir, url, work, extra_args=["--poll-interval", "0.5"], env=env
    ) as gateway:
        yield gateway, relay


def chat(gateway, model: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
        timeout=60,
    )


def test_an_adapter_is_served_from_the_s3_store(s3_gateway):
    gateway, _ = s3_gateway
    response = chat(gateway, "cached")
    assert response.status_code == 200, response.text
    assert response.headers["x-loraplex-adapter"] == "cached@1"


def test_store_outage_keeps_cached_adapters_and_recovers(s3_gateway):
    gateway, relay = s3_gateway
    assert chat(gateway, "cached").status_code == 200  # now in the local cache
    relay.off()
    try:
        eventually(
            lambda: "loraplex_store_reachable 0.0" in httpx.get(f"{gateway.base_url}/metrics").text,
            within=15,
            what="the gateway's poll notices the outage",
        )
        assert chat(gateway, "cached").status_code == 200
        outage = chat(gateway, "uncached")
        assert outage.status_code == 503
        assert "unreachable" in outage.json()["error"]["message"]
    finally:
        relay.on()
    deadline = time.monotonic() + 15
    while (status := chat(gateway, "uncached").status_code) != 200:
        assert time.monotonic() < deadline, f"no recovery, last status {status}"
        time.sleep(0.5)

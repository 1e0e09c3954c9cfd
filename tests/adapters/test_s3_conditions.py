"""SeaweedFS honours S3 conditional writes, which the S3 backend depends on.

`create` is `PutObject` with `If-None-Match: *` and `replace_if` is
`PutObject` with `If-Match: <etag>`. These tests call SeaweedFS through
plain boto3, so they show what the server does, not what loraplex assumes.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

pytestmark = pytest.mark.s3


def status(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture
def s3(s3_server, s3_store_url):
    key_prefix = s3_store_url.removeprefix(f"s3://{s3_server.bucket}/")
    return s3_server.client(), s3_server.bucket, key_prefix


def test_if_none_match_refuses_to_overwrite(s3):
    client, bucket, prefix = s3
    client.put_object(Bucket=bucket, Key=f"{prefix}/k", Body=b"one", IfNoneMatch="*")
    with pytest.raises(ClientError) as excinfo:
        client.put_object(Bucket=bucket, Key=f"{prefix}/k", Body=b"two", IfNoneMatch="*")
    assert status(excinfo.value) == ("PreconditionFailed", 412)
    assert client.get_object(Bucket=bucket, Key=f"{prefix}/k")["Body"].read() == b"one"


def test_if_match_accepts_the_current_etag_only(s3):
    client, bucket, prefix = s3
    key = f"{prefix}/aliases.json"
    client.put_object(Bucket=bucket, Key=key, Body=b"one")
    etag = client.get_object(Bucket=bucket, Key=key)["ETag"]
    client.put_object(Bucket=bucket, Key=key, Body=b"two", IfMatch=etag)
    with pytest.raises(ClientError) as excinfo:  # etag is stale now
        client.put_object(Bucket=bucket, Key=key, Body=b"three", IfMatch=etag)
    assert status(excinfo.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as excinfo:  # a key that does not exist matches nothing
        client.put_object(Bucket=bucket, Key=f"{key}.absent", Body=b"x", IfMatch=etag)
    assert status(excinfo.value) == ("PreconditionFailed", 412)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"two"


def test_racing_if_none_match_puts_have_exactly_one_winner(s3):
    client, bucket, prefix = s3
    racers = 16
    barrier = threading.Barrier(racers)

    def put(i: int) -> bool:
        barrier.wait()
        try:
            client.put_object(
                Bucket=bucket, Key=f"{prefix}/claim", Body=str(i).encode(), IfNoneMatch="*"
            )
            return True
        except ClientError as exc:
            assert status(exc) == ("PreconditionFailed", 412)
            return False

    with ThreadPoolExecutor(racers) as pool:
        wins = list(pool.map(put, range(racers)))
    assert wins.count(True) == 1
    body = client.get_object(Bucket=bucket, Key=f"{prefix}/claim")["Body"].read()
    assert body == str(wins.index(True)).encode()


def test_racing_if_match_increments_lose_no_update(s3):
    client, bucket, prefix = s3
    key = f"{prefix}/counter"
    client.put_object(Bucket=bucket, Key=key, Body=b"0")
    racers = 8
    barrier = threading.Barrier(racers)

    def increment(_: int) -> None:
        barrier.wait()
        while True:
            current = client.get_object(Bucket=bucket, Key=key)
            value = int(current["Body"].read())
            try:
                client.put_object(
                    Bucket=bucket, Key=key, Body=str(value + 1).encode(), IfMatch=current["ETag"]
                )
                return
            except ClientError as exc:
                assert status(exc) == ("PreconditionFailed", 412)

    with ThreadPoolExecutor(racers) as pool:
        list(pool.map(increment, range(racers)))
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == str(racers).encode()

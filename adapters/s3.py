"""The S3-compatible backend (`s3://bucket/prefix`), for clusters.

The endpoint comes from `LORAPLEX_S3_ENDPOINT_URL` or the standard AWS
variables (`AWS_ENDPOINT_URL`, credentials, region). Timeouts are short and
retries few, so a gateway whose store is down answers 503 quickly instead of
hanging; every failure to reach the store becomes `StoreUnavailable`.
"""

import os
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from loraplex.adapters.backend import Backend
from loraplex.adapters.errors import StoreUnavailable

_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Backend(Backend):
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreUnavailable(f"invalid S3 store URL {url!r}: use s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.client = boto3.client(
            "s3",
            endpoint_url=os.environ.get("LORAPLEX_S3_ENDPOINT_URL") or None,
            config=Config(
                connect_timeout=2,
                read_timeout=15,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unavailable(self, exc: Exception) -> StoreUnavailable:
        if isinstance(exc, ClientError) and _code(exc) == "NoSuchBucket":
            return StoreUnavailable(
                f"adapter store {self.url}: bucket {self.bucket} does not exist"
            )
        return StoreUnavailable(f"adapter store {self.url} is unreachable: {exc}")

    def read(self, key: str) -> bytes | None:
        return self.read_versioned(key)[0]

    def read_versioned(self, key: str) -> tuple[bytes | None, str | None]:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read(), response["ETag"]
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None, None
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc

    def _put(self, key: str, data: bytes, **conditions: str) -> bool:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **conditions)
            return True
        except ClientError as exc:
            if conditions and _code(exc) in _PRECONDITION:
                return False
            raise self._unavailable(exc) from exc
        except BotoCoreError as exc:
            raise self._unavailable(exc) from exc

    def write(self, key: str, data: bytes) -> None:
        self._put(key, data)

    def create(self, key: str, data: bytes) -> bool:
        return self._put(key, data, IfNoneMatch="*")

    def replace_if(self, key: str, data: bytes, token: str | None) -> bool:
        if token is None:
            return self._put(key, data, IfNoneMatch="*")
        return self._put(key, data, IfMatch=token)

    def children(self, prefix: str) -> list[str]:
        base = (
            self._key(prefix.rstrip("/") + "/")
            if prefix
            else (f"{self.prefix}/" * bool(self.prefix))
        )
        names: set[str] = set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/"
            )
            for page in pages:
                names.update(
                    p["Prefix"][len(base) :].rstrip("/") for p in page.get("CommonPrefixes", [])
                )
                names.update(o["Key"][len(base) :] for o in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc
        return sorted(n for n in names if n and not n.startswith("."))

    def delete(self, key: str) -> None:
        try:  # S3 answers 204 for a key that does not exist
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc

    def delete_tree(self, prefix: str) -> None:
        base = self._key(prefix.rstrip("/") + "/")
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))

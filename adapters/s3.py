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


PARALLEL_READS = 16
"""Small reads run at once (a catalog page, the index's first refresh), and the
connections botocore pools for them: past its pool (10 by default) urllib3
discards connections and warns for each."""


class S3Backend(Backend):
    parallel_reads = PARALLEL_READS

    def __init__(
        self, url: str, *, connect_timeout: float = 2.0, read_timeout: float = 5.0
    ) -> None:
        parsed = urlparse(url)
        if not parsed.netloc:
            raise StoreUnavailable(f"invalid S3 store URL {url!r}: use s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        # read_timeout bounds each socket read, not a whole transfer, so a large
        # adapter still downloads; a server that accepts and then says nothing
        # costs at most (connect + read) x 2 attempts: 14 s, not botocore's minutes.
        self.client = boto3.client(
            "s3",
            endpoint_url=os.environ.get("LORAPLEX_S3_ENDPOINT_URL") or None,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"total_max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
                max_pool_connections=PARALLEL_READS,
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

    def _list(
        self, base: str, delimiter: str, start_after: str = ""
    ) -> tuple[list[str], list[str]]:
        """(keys, common prefixes) under `base`, both relative to it, over every page."""
        keys: list[str] = []
        prefixes: list[str] = []
        options = {"Delimiter": delimiter} if delimiter else {}
        if start_after:
            options["StartAfter"] = start_after
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, **options
            )
            for page in pages:
                prefixes += [p["Prefix"][len(base) :] for p in page.get("CommonPrefixes", [])]
                keys += [o["Key"][len(base) :] for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc
        return keys, prefixes

    def _folder(self, prefix: str) -> str:
        """The key prefix of a folder: `name` → `<prefix>/name/`, "" → `<prefix>/`."""
        if prefix:
            return self._key(prefix.rstrip("/") + "/")
        return f"{self.prefix}/" if self.prefix else ""

    def children(self, prefix: str) -> list[str]:
        keys, prefixes = self._list(self._folder(prefix), "/")
        names = {p.rstrip("/") for p in prefixes} | set(keys)
        return sorted(n for n in names if n and not n.startswith("."))

    def walk(self, prefix: str) -> list[str]:
        keys, _ = self._list(self._folder(prefix), "")
        # A key ending in "/" is a folder marker some servers keep, not an object.
        return sorted(
            k
            for k in keys
            if k and not k.endswith("/") and not any(p.startswith(".") for p in k.split("/"))
        )

    def walk_stamped(self, prefix: str) -> dict[str, str]:
        base = self._folder(prefix)
        stamps = {}
        try:  # one LIST call per thousand keys
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(base) :]
                    if (
                        key
                        and not key.endswith("/")
                        and not any(p.startswith(".") for p in key.split("/"))
                    ):
                        stamps[key] = obj["ETag"]
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc
        return stamps

    def list_folder(self, prefix: str, start_after: str = "") -> list[str]:
        base = self._folder(prefix)
        names: list[str] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/", StartAfter=base + start_after
            )
            for page in pages:
                names += [o["Key"][len(base) :] for o in page.get("Contents", [])]
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc
        return sorted(n for n in names if n)

    def folders(self, after: str = "") -> list[str]:
        base = self._folder("")
        # StartAfter skips what sorts before `after` in either server's order.
        _, prefixes = self._list(base, "/", start_after=base + after if after else "")
        return sorted(n for p in prefixes if (n := p.rstrip("/")) > after and n[:1] != ".")

    def delete(self, key: str) -> None:
        try:  # S3 answers 204 for a key that does not exist
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc

    def delete_tree(self, prefix: str) -> None:
        base = self._folder(prefix)
        keys, _ = self._list(base, "")
        try:
            for start in range(0, len(keys), 1000):  # DeleteObjects takes 1000 keys at most
                batch = [{"Key": base + k} for k in keys[start : start + 1000]]
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))

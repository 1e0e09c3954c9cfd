"""Per-request routing by the `model` field, as ASGI middleware.

Contract: for every JSON POST whose `model` names an adapter (`name`,
`name:alias`, `name@N`), the middleware resolves it to an immutable
`name@N`, makes sure that version is fetched and verified locally, rewrites
`model` in the body, and lets vLLM's own handler serve the request; the
response carries `x-loraplex-adapter: name@N`. A request for the base (or
with no `model`) passes through untouched. Errors of the store become
OpenAI error objects here (serve/errors.py), before vLLM sees the request.
It is pure ASGI (not BaseHTTPMiddleware) so streaming and client
disconnects reach vLLM unchanged.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from loraplex.adapters import (
    AdapterError,
    AdapterNotFound,
    AdapterRef,
    InvalidReference,
    StoreUnavailable,
)
from loraplex.jobs.names import is_fine_tuned
from loraplex.serve.auth import request_key
from loraplex.serve.errors import adapter_error_response, error_response
from loraplex.serve.fine_tuned import JobWatch
from loraplex.serve.index import AdapterIndex, AdapterVersion, not_found
from loraplex.serve.instrument import ADAPTER_LABEL_KEY
from loraplex.serve.limits import RequestLimits, RequestTooLarge, too_large
from loraplex.serve.loader import AdapterLoader
from loraplex.serve.metrics import BASE, UNKNOWN, AdapterLabels

ADAPTER_HEADER = b"x-loraplex-adapter"
# Routes whose bodies are not inference requests (uploads can be far larger
# than a request): routing neither reads nor rewrites them.
NOT_ROUTED = ("/v1/files", "/v1/fine_tuning")
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AdapterRouter:
    """Turns a request's `model` into the adapter version that will answer it."""

    def __init__(
        self,
        base_name: str,
        index: AdapterIndex,
        loader: AdapterLoader,
        labels: AdapterLabels,
        fine_tuned: JobWatch | None = None,
    ) -> None:
        self.base_name = base_name
        self.index = index
        self.loader = loader
        self.labels = labels
        self.fine_tuned = fine_tuned

    def is_base(self, model: str | None) -> bool:
        return not model or model == self.base_name

    async def route(self, model: str, key=None) -> AdapterVersion:
        if is_fine_tuned(model) and self.fine_tuned is not None:
            # `ft:…` is a fine-tuned model id, never name:alias (jobs/names.py);
            # its job's tenant decides who may use it, not the key's patterns.
            adapter = await asyncio.to_thread(self.fine_tuned.resolve, model, key)
            await self.loader.ensure_local(adapter)
            return adapter
        ref = AdapterRef.parse(model)
        if key is not None and not key.may_use(ref.name):
            raise not_found(ref)  # a tenant cannot tell others' adapters from missing ones
        adapter = await asyncio.to_thread(self.index.resolve, ref)
        await self.loader.ensure_local(adapter)
        return adapter


class RoutingMiddleware:
    def __init__(self, app: Callable, router: AdapterRouter, limits: RequestLimits) -> None:
        self.app = app
        self.router = router
        self.limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or scope["path"].startswith(NOT_ROUTED)
        ):
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        try:
            body = await read_body(receive, self.limits.max_body_bytes)
        except RequestTooLarge:
            return await too_large(self.limits.max_body_bytes)(scope, receive, send)
        payload = _json_object(body)
        if payload is not None and (violation := self.limits.violation(payload)):
            message, param = violation
            response = error_response(message, HTTPStatus.BAD_REQUEST, "BadRequestError", param)
            return await response(scope, receive, send)
        model = payload.get("model") if payload is not None else None
        if not isinstance(model, str) or self.router.is_base(model):
            state[ADAPTER_LABEL_KEY] = BASE
            return await self.app(scope, replay(body, receive), send)
        try:
            adapter = await self.router.route(model, request_key(scope))
        except AdapterError as exc:
            state[ADAPTER_LABEL_KEY] = self._error_label(model, exc)
            return await adapter_error_response(exc)(scope, receive, send)
        state[ADAPTER_LABEL_KEY] = self.router.labels.for_adapter(adapter.name)
        payload["model"] = adapter.lora_name
        body = json.dumps(payload).encode()
        scope = {**scope, "headers": _with_content_length(scope["headers"], len(body))}
        await self.app(scope, replay(body, receive), _tag_response(send, adapter.lora_name))

    def _error_label(self, model: str, exc: AdapterError) -> str:
        if is_fine_tuned(model) or isinstance(
            exc, (InvalidReference, AdapterNotFound, StoreUnavailable)
        ):
            return UNKNOWN  # a client-chosen string never becomes a label value
        return self.router.labels.for_adapter(AdapterRef.parse(model).name)


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the (possibly rewritten) body once, then the real
    channel, so vLLM still sees the client's disconnect."""
    sent = False

    async def _receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return _receive


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None  # not ours to judge: vLLM answers a bad body with its own 400
    return payload if isinstance(payload, dict) else None


def _with_content_length(headers: list[tuple[bytes, bytes]], length: int) -> list:
    kept = [(k, v) for k, v in headers if k.lower() != b"content-length"]
    return [*kept, (b"content-length", str(length).encode())]


def _tag_response(send: Send, lora_name: str) -> Send:
    async def _send(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            headers.append((ADAPTER_HEADER, lora_name.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return _send

"""Input limits and back-pressure.

- `RequestLimits` checks a request body before the engine sees it: its size
  (413), `max_tokens` above the configured cap and `n` above its cap (400,
  naming the limit). A prompt longer than the model's context is refused by
  vLLM itself with a 400 that names the context length.
- `ConcurrencyMiddleware` bounds what one API key may have running (429 with
  `Retry-After`) and how many requests the engine may have queued or running
  (503 with `Retry-After`, so OpenAI clients retry).
"""

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from loraplex.serve.auth import request_key
from loraplex.serve.errors import error_response


class RequestTooLarge(Exception):
    pass


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int
    max_tokens_cap: int | None
    max_n: int

    def violation(self, payload: dict[str, Any]) -> tuple[str, str] | None:
        """(message, param) for the first limit the request breaks, or None."""
        for param in ("max_tokens", "max_completion_tokens", "max_output_tokens"):
            value = payload.get(param)
            cap = self.max_tokens_cap
            if cap is not None and isinstance(value, int) and value > cap:
                return f"{param}={value} is above this server's limit of {cap}", param
        n = payload.get("n")
        if isinstance(n, int) and n > self.max_n:
            return f"n={n} is above this server's limit of {self.max_n}", "n"
        return None


def too_large(limit: int):
    return error_response(
        f"request body is larger than this server's limit of {limit} bytes",
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "RequestTooLargeError",
    )


def _busy(message: str, status: HTTPStatus, err_type: str):
    response = error_response(message, status, err_type)
    response.headers["Retry-After"] = "1"
    return response


class ConcurrencyMiddleware:
    def __init__(
        self, app, per_key: int, queue_cap: int, engine_in_flight: Callable[[], int]
    ) -> None:
        self.app = app
        self.per_key = per_key
        self.queue_cap = queue_cap
        self.engine_in_flight = engine_in_flight
        self.running: Counter[str] = Counter()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if self.engine_in_flight() >= self.queue_cap:
            response = _busy(
                f"the engine has {self.queue_cap} requests queued or running; retry shortly",
                HTTPStatus.SERVICE_UNAVAILABLE,
                "ServiceUnavailableError",
            )
            return await response(scope, receive, send)
        key = request_key(scope)
        name = key.name if key is not None else ""
        if key is not None and self.running[name] >= self.per_key:
            response = _busy(
                f"key '{name}' already has {self.per_key} requests running; retry shortly",
                HTTPStatus.TOO_MANY_REQUESTS,
                "RateLimitError",
            )
            return await response(scope, receive, send)
        self.running[name] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.running[name] -= 1
